"""Services: create, list, show, update, stop, logs, tokens, and the proxy to their
replicas (`/v1/services/{name}/invoke/{path}`), every caller identified as for any
other route."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response, status
from fastapi.responses import StreamingResponse
from starlette.background import BackgroundTask
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool

from nai_server.api.deps import CallerDep, ServiceDep
from nai_server.api.log_follow import follow_log
from nai_server.app.services import Services
from nai_server.protocol import MAX_ID, NAME_PATTERN
from nai_server.protocol.services import (
    BodyTooLarge,
    ServiceCreate,
    ServiceInfo,
    ServiceList,
    ServiceUpdate,
    TokenCreate,
    TokenInfo,
)

router = APIRouter(tags=["services"])

Name = Annotated[str, Path(pattern=NAME_PATTERN, max_length=64)]
FOLLOW_POLL_SECONDS = 0.05
LOG_CHUNK = 1 << 16
MAX_BODY = 64 << 20  # as api/limits.py lets through to the invoke route
WHOLE_ANSWER = 64 << 10  # answers up to this size are relayed in one piece
INVOKE_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]


@router.post("/services", status_code=status.HTTP_201_CREATED)
def create(body: ServiceCreate, service: ServiceDep, caller: CallerDep) -> ServiceInfo:
    """Serve a model version (`name@version|tag|latest`, read with your access)."""
    return service.services.create(caller, body)


@router.get("/services")
def listing(service: ServiceDep, caller: CallerDep) -> ServiceList:
    """The services you may see."""
    return service.services.listing(caller)


@router.get("/services/{name}")
def show(name: Name, service: ServiceDep, caller: CallerDep) -> ServiceInfo:
    return service.services.show(caller, name)


@router.patch("/services/{name}")
def update(name: Name, body: ServiceUpdate, service: ServiceDep,
           caller: CallerDep) -> ServiceInfo:
    """Roll to another model version, scale, change who may see it."""
    return service.services.update(caller, name, body)


@router.delete("/services/{name}")
def stop(name: Name, service: ServiceDep, caller: CallerDep) -> ServiceInfo:
    """Stop every replica (SIGTERM, SIGKILL after the grace period)."""
    return service.services.stop(caller, name)


@router.get("/services/{name}/logs", response_class=StreamingResponse)
def logs(name: Name, service: ServiceDep, caller: CallerDep,
         replica: int = Query(0, ge=0, le=64), offset: int = Query(0, ge=0, le=MAX_ID),
         follow: bool = False) -> StreamingResponse:
    """Replica `replica`'s stdout+stderr (its current run's) from byte `offset`;
    `follow=true` streams until that run ends."""
    services = service.services
    where = services.log_dir(caller, name, replica)
    if follow:
        body = follow_log(lambda: services.log_ended(name, where), where, offset,
                          chunk=LOG_CHUNK, poll=FOLLOW_POLL_SECONDS)
        return StreamingResponse(body, media_type="text/plain; charset=utf-8")
    return StreamingResponse(iterate_in_threadpool(service.jobs.log_chunks(where, offset)),
                             media_type="text/plain; charset=utf-8")


@router.post("/services/{name}/tokens", status_code=status.HTTP_201_CREATED)
def create_token(name: Name, body: TokenCreate, service: ServiceDep,
                 caller: CallerDep) -> TokenInfo:
    """A bearer token for the HTTP gateway: shown this once, kept only as a hash."""
    return service.services.create_token(caller, name, body)


@router.get("/services/{name}/tokens")
def list_tokens(name: Name, service: ServiceDep, caller: CallerDep) -> list[TokenInfo]:
    return service.services.list_tokens(caller, name)


@router.delete("/services/{name}/tokens/{token_id}", status_code=status.HTTP_204_NO_CONTENT)
def delete_token(name: Name, token_id: Annotated[str, Path(max_length=64)],
                 service: ServiceDep, caller: CallerDep) -> Response:
    service.services.delete_token(caller, name, token_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


async def invoke(name: Name, path: str, request: Request, service: ServiceDep,
                 caller: CallerDep) -> Response:
    """The request, streamed to a ready replica as `/{path}?{query}`, and its answer
    back; 503 when none is ready within the service's wait."""
    services = service.services
    wait = services.admit_now(caller, name)  # in memory while the store is unchanged
    if wait is None:
        wait = await run_in_threadpool(services.admit, caller, name)
    return await relay(services, name, wait, path, request)


for _method in INVOKE_METHODS:  # one route per method: each its own operation id
    router.add_api_route("/services/{name}/invoke/{path:path}", invoke, methods=[_method],
                         response_class=StreamingResponse,
                         operation_id=f"invoke_service_{_method.lower()}")


async def relay(services: Services, name: str, wait: float, path: str,
                request: Request) -> Response:
    """Shared with the gateway: forward `request` to `/{path}` of a replica."""
    chunks, size = [], 0
    async for chunk in request.stream():
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_BODY:
            raise BodyTooLarge(f"requests to a service are relayed up to "
                               f"{MAX_BODY >> 20} MiB; send less at once")
    target = "/" + path + (f"?{request.url.query}" if request.url.query else "")
    answer = await services.invoke(name, wait, request.method, target,
                                   request.headers.raw, b"".join(chunks))
    length = answer.length if request.method != "HEAD" else None
    if length is not None and length <= WHOLE_ANSWER:
        # Small and sized: read whole, sent in one piece (a streamed answer costs a
        # task group and a message per piece); the replica's deadlines still hold.
        data = b"".join([chunk async for chunk in answer.body])
        whole = Response(data, status_code=answer.status)
        whole.raw_headers = [*answer.headers, (b"content-length", str(len(data)).encode())]
        return whole
    body_iter = answer.body
    response = StreamingResponse(body_iter, status_code=answer.status,
                                 background=BackgroundTask(_close, body_iter))
    response.raw_headers = list(answer.headers)  # as the replica sent them, repeats too
    return response


async def _close(body: AsyncIterator[bytes]) -> None:
    aclose = getattr(body, "aclose", None)
    if aclose is not None:
        await aclose()

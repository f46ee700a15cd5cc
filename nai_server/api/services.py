"""Services: create, list, show, update, stop, logs, tokens, and the proxy to their
replicas (`/v1/services/{name}/invoke/{path}`), every caller identified as for any
other route."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status
from fastapi.responses import StreamingResponse
from starlette.concurrency import iterate_in_threadpool

from nai_server.api.deps import CallerDep, ServiceDep
from nai_server.api.log_follow import follow_log
from nai_server.api.relay import INVOKE_BODY, INVOKE_METHODS, Relayed, invoke_admit, route_rest
from nai_server.protocol import MAX_ID, NAME_PATTERN
from nai_server.protocol.services import (
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


async def invoke(name: Name, path: str, service: ServiceDep, caller: CallerDep) -> Response:
    """The request, streamed to a ready replica as `/{path}?{query}`, and its answer
    back; 503 when none is ready within the service's wait. (Served by `api.relay.Relays`
    before the router; this route is its description, and the same relay.)"""
    return Relayed(invoke_admit(service.services, caller, name, service.annotating),
                   INVOKE_BODY, route_rest(path))


for _method in INVOKE_METHODS:  # one route per method: each its own operation id
    router.add_api_route("/services/{name}/invoke/{path:path}", invoke, methods=[_method],
                         response_class=StreamingResponse,
                         operation_id=f"invoke_service_{_method.lower()}")

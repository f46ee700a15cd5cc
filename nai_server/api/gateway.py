"""The HTTP gateway (`services.gateway.listen`, off by default): services on TCP for
people and programs without SSH, as `/{service}/{path}`. Only bearer tokens made for
that service open it (`nai service token create`), or, where the admin allows public
services (`services.gateway.allow_public`), its owner marking it public. Without
either the answer is 401, whether or not the service exists. The token stays with the
daemon: the `Authorization` header is not passed on to the replica (the model's code)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import socket
from collections.abc import Iterator
from urllib.parse import unquote

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from nai_server.api.relay import (
    INVOKE_BODY,
    INVOKE_METHODS,
    Relayed,
    invoke_admit,
    route_rest,
    split,
)
from nai_server.app.services import Services
from nai_server.app.use_cases import UseCases
from nai_server.protocol import ApiError, Unauthorized

log = logging.getLogger("nai.gateway")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
MAX_REMEMBERED = 4096  # gateway decisions kept per store generation
NOT_FORWARDED = frozenset({b"authorization"})


def bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


class Allowed:
    """`Services.gateway_allows`, remembered while the store is unchanged: a request
    with a token seen before takes neither the store's lock nor a worker thread."""

    def __init__(self, services: Services, most: int = MAX_REMEMBERED) -> None:
        self.services = services
        self.most = most
        self._seen: dict[tuple[str, str], bool] = {}
        self._generation: object = None

    async def __call__(self, name: str, token: str | None) -> bool:
        generation = self.services.store.generation()  # before reading: a write since is newer
        if generation != self._generation:
            self._seen, self._generation = {}, generation
        key = (name, hashlib.sha256(token.encode()).hexdigest() if token else "")
        allowed = self._seen.get(key)
        if allowed is None:
            allowed = await run_in_threadpool(self.services.gateway_allows, name, token)
            if self._generation == generation and len(self._seen) < self.most:
                self._seen[key] = allowed
        return allowed


def create_gateway(service: UseCases) -> FastAPI:
    app = FastAPI(title="nai gateway", docs_url=None, redoc_url=None, openapi_url=None)
    allowed = Allowed(service.services)

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.to_body(), status_code=exc.status)

    @app.exception_handler(Exception)
    async def crash(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error in the gateway: %s %s", request.method, request.url.path)
        return JSONResponse({"error": {"code": "internal", "message": "internal error"}},
                            status_code=500)

    @app.api_route("/{name}/{path:path}", methods=INVOKE_METHODS)
    async def gateway(name: str, path: str, request: Request) -> Response:
        token = bearer(request.headers.get("authorization"))
        if _NAME.fullmatch(name) is None or not await allowed(name, token):
            raise Unauthorized(f"{name!r} needs a bearer token made for it (its owner makes "
                               f"one with `nai service token create SERVICE`)")
        rest = split(request.scope.get("raw_path") or b"", 1)
        if rest is None or unquote(rest.decode("latin-1")) != path:
            rest = route_rest(path)
        # The token is nai's, not the model's: the replica's code never sees it.
        return Relayed(invoke_admit(service.services, None, name), INVOKE_BODY, rest,
                       drop=NOT_FORWARDED)

    return app


class _Server(uvicorn.Server):
    """uvicorn without its signal capture: the daemon's own handlers stay."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def bind(listen: str) -> socket.socket:
    """The gateway's TCP socket for `HOST:PORT` (`[::1]:8800` for IPv6)."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, int(port)))
    except (OSError, ValueError) as exc:
        sock.close()
        raise OSError(f"services.gateway.listen {listen!r}: cannot listen there: {exc}") from exc
    sock.listen(1024)
    return sock


def start(service: UseCases) -> tuple[uvicorn.Server, asyncio.Task[None]] | None:
    """Serve the gateway in the running loop, if the config turns it on."""
    listen = service.config.services.gateway.listen
    if not listen:
        return None
    sock = bind(listen)
    server = _Server(uvicorn.Config(create_gateway(service), lifespan="off",
                                    log_level="warning", access_log=False))
    log.info("services gateway listening on %s", listen)
    return server, asyncio.create_task(server.serve(sockets=[sock]))

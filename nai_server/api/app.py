"""The FastAPI application: error bodies, method override, routers."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from nai_server import __version__
from nai_server.api import (
    accounts,
    blobs,
    jobs,
    notify,
    openapi,
    processing,
    registry,
    services,
    store,
    system,
    usage,
)
from nai_server.api.limits import BodyLimit
from nai_server.api.relay import Relays
from nai_server.api.turns import Turns
from nai_server.app import faults
from nai_server.app.use_cases import UseCases
from nai_server.core.bounds import scrub, shown
from nai_server.protocol import API_VERSION, METHOD_OVERRIDE_HEADER, ApiError, error_sentence

log = logging.getLogger("nai.api")

_OVERRIDABLE = {"PUT", "PATCH", "DELETE"}
_HTTP_CODES = {400: "invalid", 401: "unauthenticated", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 409: "conflict", 413: "too_large", 422: "invalid"}


class SafeJSONResponse(JSONResponse):
    """A JSON response that always encodes: a lone surrogate (from a request's JSON
    escapes, quoted back in an error) becomes U+FFFD instead of a 500."""

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except UnicodeEncodeError:
            return super().render(_scrubbed(content))


def _scrubbed(value: Any) -> Any:
    if isinstance(value, str):
        return scrub(value)
    if isinstance(value, dict):
        return {_scrubbed(k): _scrubbed(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrubbed(v) for v in value]
    return value


class MethodOverride:
    """Treat `POST` + `X-HTTP-Method-Override: PUT|PATCH|DELETE` as that method,
    for networks whose proxies allow only GET and POST."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.header = METHOD_OVERRIDE_HEADER.lower().encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            for name, value in scope["headers"]:
                if name == self.header:
                    method = value.decode("latin-1").strip().upper()
                    if method not in _OVERRIDABLE:
                        body = _error_body("invalid", f"{METHOD_OVERRIDE_HEADER} must be one "
                                           f"of PUT, PATCH, DELETE (got {shown(method)})")
                        await SafeJSONResponse(body, status_code=400)(scope, receive, send)
                        return
                    scope = {**scope, "method": method}
                    break
        await self.app(scope, receive, send)


class SpaceFloor:
    """Refuse an upload (a blob pack) with 507 while the state dir's free space is below
    the configured floor; everything else, running jobs included, goes on."""

    def __init__(self, app: ASGIApp, service: UseCases) -> None:
        self.app = app
        self.config = service.config

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] == "http" and scope["method"] == "POST"
                and scope["path"] == "/v1/blobs"):
            refused = faults.uploads_refused(self.config)
            if refused is not None:
                await SafeJSONResponse(refused.to_body(), status_code=refused.status)(
                    scope, receive, send)
                return
        await self.app(scope, receive, send)


def _error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    err: dict[str, Any] = {"code": code, "message": message}
    if details:
        err["details"] = details
    return {"error": err}


def _validation_message(exc: RequestValidationError) -> str:
    # In words (protocol.error_sentence): the field, the value, the limit; no regexes.
    return "; ".join(error_sentence(err) for err in exc.errors()[:5]) or "invalid request"


def create_app(service: UseCases) -> FastAPI:
    """Build the ASGI app around one service (no globals: tests build many)."""
    app = FastAPI(
        title="nai-server",
        version=__version__,
        summary=f"NothingAI REST API {API_VERSION}",
        docs_url=None,
        redoc_url=None,
        default_response_class=SafeJSONResponse,
    )
    app.state.service = service

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        if (full := faults.disk_full(exc)) is not None:  # a commit that found no space:
            # say so, and that nothing of the request was kept (CommitFailed's own words)
            log.error("disk full, in %s %s: %s", request.method, request.url.path, exc)
            return SafeJSONResponse(full.to_body(), status_code=full.status)
        return SafeJSONResponse(exc.to_body(), status_code=exc.status)

    @app.exception_handler(OSError)
    async def disk_full(request: Request, exc: Exception) -> JSONResponse:
        if (full := faults.disk_full(exc)) is None:
            return await crash(request, exc)
        log.error("disk full, in %s %s: %s", request.method, request.url.path, exc)
        return SafeJSONResponse(full.to_body(), status_code=full.status)

    async def store_damaged(request: Request, exc: Exception) -> JSONResponse:
        # Raised before a streamed answer starts (the store checks first), so the
        # caller gets a status rather than a cut-off download.
        log.error("blob store damaged, in %s %s: %s", request.method, request.url.path, exc)
        error = faults.store_damaged(exc)
        return SafeJSONResponse(error.to_body(), status_code=error.status)

    for damaged in faults.STORE_DAMAGED:
        app.add_exception_handler(damaged, store_damaged)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return SafeJSONResponse(_error_body("invalid", _validation_message(exc)),
                                status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "error")
        headers = dict(getattr(exc, "headers", None) or {})
        if exc.status_code == 405 and (allowed := openapi.allowed_methods(app, request.url.path)):
            # Starlette names only the first route that matched the path; a path served
            # by several routes (GET and DELETE /v1/jobs/{id}) allows all their methods.
            headers["Allow"] = ", ".join(allowed)
        return SafeJSONResponse(_error_body(code, str(exc.detail)),
                                status_code=exc.status_code, headers=headers or None)

    @app.exception_handler(Exception)
    async def crash(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error in %s %s", request.method, request.url.path)
        return SafeJSONResponse(
            _error_body("internal", "internal server error; the daemon's log has the details"),
            status_code=500,
        )

    for module in (system, accounts, blobs, jobs, registry, store, processing, notify,
                   services, usage):
        app.include_router(module.router, prefix="/v1")
    openapi.install(app)
    app.add_middleware(Relays, service=service)  # the proxies, before the router
    app.add_middleware(Turns)  # listings one at a time, after the job pages
    app.add_middleware(SpaceFloor, service=service)
    app.add_middleware(MethodOverride)
    app.add_middleware(BodyLimit)  # added last: the outermost, before anything reads
    return app

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
from nai_server.api import accounts, blobs, jobs, registry, system
from nai_server.protocol import API_VERSION, METHOD_OVERRIDE_HEADER, ApiError
from nai_server.service import Service

log = logging.getLogger("nai.api")

_OVERRIDABLE = {"PUT", "PATCH", "DELETE"}
_HTTP_CODES = {400: "invalid", 401: "unauthenticated", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 409: "conflict", 413: "too_large", 422: "invalid"}


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
                                           f"of PUT, PATCH, DELETE (got {method!r})")
                        await JSONResponse(body, status_code=400)(scope, receive, send)
                        return
                    scope = {**scope, "method": method}
                    break
        await self.app(scope, receive, send)


def _error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    err: dict[str, Any] = {"code": code, "message": message}
    if details:
        err["details"] = details
    return {"error": err}


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        parts.append(f"{loc or 'body'}: {err.get('msg')}")
    return "; ".join(parts) or "invalid request"


def create_app(service: Service) -> FastAPI:
    """Build the ASGI app around one service (no globals: tests build many)."""
    app = FastAPI(
        title="nai-server",
        version=__version__,
        summary=f"NothingAI REST API {API_VERSION}",
        docs_url=None,
        redoc_url=None,
    )
    app.state.service = service

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(exc.to_body(), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(_error_body("invalid", _validation_message(exc)), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "error")
        return JSONResponse(_error_body(code, str(exc.detail)), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def crash(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error in %s %s", request.method, request.url.path)
        return JSONResponse(
            _error_body("internal", "internal server error; the daemon's log has the details"),
            status_code=500,
        )

    for module in (system, accounts, blobs, jobs, registry):
        app.include_router(module.router, prefix="/v1")
    app.add_middleware(MethodOverride)
    return app

"""Caps on request bodies, applied before a route reads one (DESIGN §11).

A JSON body is parsed whole into memory: one 200 MB string cost the daemon 90 s and
2.8 GB. Each route gets a cap: small for ordinary JSON, larger for tree manifests and
the lists of digests or paths that go with them, none for the packed blob upload,
which streams to disk under its own per-blob and per-tree limits. A body announced
larger than its cap is refused at once with 413, before any of it is read; a chunked
body is counted as it arrives and refused as soon as it passes the cap.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nai_server.core.units import format_size

JSON_BODY_LIMIT = 1 << 20  # jobs, accounts, registries: a few KiB in practice
# Tree manifests and the digest or path lists of a tree: ~150 bytes an entry, so
# about 400,000 entries. Larger trees are sent as several.
BULK_BODY_LIMIT = 64 << 20

# (method, path pattern, limit); None = not capped here. The first match wins.
ROUTE_LIMITS: tuple[tuple[str, re.Pattern[str], int | None], ...] = (
    ("POST", re.compile(r"/v1/blobs"), None),  # streamed packs, bounded by their receiver
    ("POST", re.compile(r"/v1/blobs/missing"), BULK_BODY_LIMIT),
    ("POST", re.compile(r"/v1/trees"), BULK_BODY_LIMIT),
    ("POST", re.compile(r"/v1/trees/[^/]+/archive"), BULK_BODY_LIMIT),
    # A service's requests (model inputs: images, batches) go to its replica whole.
    *((m, re.compile(r"/v1/services/[^/]+/invoke/.*"), BULK_BODY_LIMIT)
      for m in ("POST", "PUT", "PATCH")),
)


def body_limit(method: str, path: str) -> int | None:
    """The cap on the body of `method path`, or None for a route that streams its body."""
    for route_method, pattern, limit in ROUTE_LIMITS:
        if method == route_method and pattern.fullmatch(path):
            return limit
    return JSON_BODY_LIMIT


def _too_large(method: str, path: str, limit: int) -> str:
    return (f"the request body is larger than {format_size(limit)}, the limit for "
            f"{method} {path if len(path) <= 80 else path[:79] + '…'}; send less at once")


class BodyLimit:
    """ASGI middleware: 413 `{"error": {"code": "too_large", ...}}` for a body over the
    route's cap, from Content-Length when given, else by counting what arrives."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        limit = body_limit(method, path)
        if limit is None:
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            body = {"error": {"code": "too_large", "message": _too_large(method, path, limit)}}
            # Connection: close, since the unread body cannot be skipped cheaply.
            await JSONResponse(body, status_code=413, headers={"Connection": "close"})(
                scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # An HTTPException passes through FastAPI's body parsing untouched and
                    # becomes the same 413 error body (api.app's handler).
                    raise HTTPException(413, _too_large(method, path, limit),
                                        headers={"Connection": "close"})
            return message

        await self.app(scope, counted, send)


def _content_length(scope: Scope) -> int | None:
    headers: Any = scope.get("headers") or ()
    for name, value in headers:
        if name == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isdigit() and len(text) < 20 else None
    return None

"""The one relay behind the daemon's proxies: a service's replicas
(`/v1/services/{name}/invoke/{path}`, and the gateway's `/{name}/{path}`), an annotate
session's (a service too: app/annotator_services.py) among them.

Each proxy checks access its own way (an `Admit`: who may call, whether the target is
up) before a byte of the body is read; the rest is shared: the body read whole up to a
cap, the path sent on as the caller wrote it (not decoded and re-encoded), the answer
sent back in one piece when it is small and sized, else streamed, and errors as the
API's error bodies.

It runs as plain ASGI, and `Relays` serves the two socket routes in front of FastAPI's
router: matching the path against every route and solving the dependencies cost about
half of the daemon's CPU per relayed request (each route is still declared, for the
API's description and for parameters the fast path leaves to the router to refuse).
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from typing import Protocol
from urllib.parse import quote, unquote

from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.responses import Response, StreamingResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from nai_server.api.identity import PEER_KEY
from nai_server.api.limits import BULK_BODY_LIMIT
from nai_server.app.accounts import Caller
from nai_server.app.annotator_services import AnnotatorSessions
from nai_server.app.services import Services
from nai_server.app.use_cases import UseCases
from nai_server.core.processing import is_session
from nai_server.core.units import format_size
from nai_server.protocol import NAME_PATTERN, ApiError, Invalid, NotFound
from nai_server.protocol.services import BodyTooLarge

Headers = list[tuple[bytes, bytes]]
WHOLE_ANSWER = 64 << 10  # answers up to this size are relayed in one piece
INVOKE_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
INVOKE_BODY = BULK_BODY_LIMIT  # as api/limits.py lets through to the invoke route
_NAME = re.compile(NAME_PATTERN)
_INVOKE = re.compile(r"/v1/services/([^/]+)/invoke/(.*)", re.DOTALL)


class Reply(Protocol):
    """What a relay target answers (`host.replica_http.Answer`)."""

    status: int
    headers: Headers
    body: AsyncIterator[bytes]
    length: int | None


# (method, target, headers, body) -> the answer, its body still to come
Forward = Callable[[str, str, Headers, bytes], Awaitable[Reply]]
Admit = Callable[[], Awaitable[Forward]]  # raises ApiError when the caller may not


async def relay(scope: Scope, receive: Receive, send: Send, admit: Admit, *, cap: int,
                rest: bytes, drop: Collection[bytes] = ()) -> None:
    """Answer the request in `scope` by forwarding it as `/{rest}?{query}` through what
    `admit` allows, less the headers named in `drop` (lower case)."""
    try:
        forward = await admit()
        body = await read_body(receive, cap)
        target = _target(rest, scope.get("query_string") or b"")
        headers = scope["headers"]
        if drop:
            headers = [(k, v) for k, v in headers if k not in drop]
        answer = await forward(scope["method"], target, headers, body)
    except ApiError as exc:
        await _error(send, exc.status, exc.to_body())
        return
    except HTTPException as exc:  # api/limits.py's cap on a body sent in chunks
        await _error(send, exc.status_code, {"error": {"code": "too_large",
                                                       "message": str(exc.detail)}},
                     [(b"connection", b"close")])
        return
    await send_answer(scope, receive, send, answer)


class Relayed(Response):
    """The relay as a route's answer, for a request the router reached."""

    def __init__(self, admit: Admit, cap: int, rest: bytes,
                 drop: Collection[bytes] = ()) -> None:
        super().__init__()
        self.admit, self.cap, self.rest, self.drop = admit, cap, rest, drop

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await relay(scope, receive, send, self.admit, cap=self.cap, rest=self.rest,
                    drop=self.drop)


def route_rest(path: str) -> bytes:
    """A route's decoded `{path}` parameter, encoded again to be sent on."""
    return quote(path, safe="/:@!$&'()*+,;=~").encode()


def _target(rest: bytes, query: bytes) -> str:
    try:
        return "/" + rest.decode("ascii") + ("?" + query.decode("ascii") if query else "")
    except UnicodeDecodeError:
        raise Invalid("the path and query of a relayed request must be ASCII; "
                      "percent-encode the rest") from None


async def read_body(receive: Receive, cap: int) -> bytes:
    """The whole request body; BodyTooLarge past `cap` bytes."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break  # the caller went away; what came is sent, and the answer dropped
        chunk = message.get("body", b"")
        if chunk:
            chunks.append(chunk)
            size += len(chunk)
            if size > cap:
                raise BodyTooLarge(f"request bodies are relayed up to {format_size(cap)}; "
                                   f"send less at once")
        if not message.get("more_body"):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def send_answer(scope: Scope, receive: Receive, send: Send, answer: Reply) -> None:
    """The answer, headers as the target sent them (repeats too, hop-by-hop ones gone)."""
    body = answer.body
    length = answer.length if scope["method"] != "HEAD" else None
    if length is None or length > WHOLE_ANSWER:
        streamed = StreamingResponse(body, status_code=answer.status)
        streamed.raw_headers = list(answer.headers)
        try:  # Starlette's: it also stops when the caller goes away
            await streamed(scope, receive, send)
        finally:
            await _close(body)
        return
    # Small and sized: read whole and sent in one write; the target's deadlines hold.
    try:
        chunks = [chunk async for chunk in body]
    finally:
        await _close(body)
    data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
    await send({"type": "http.response.start", "status": answer.status,
                "headers": [*answer.headers, (b"content-length", b"%d" % len(data))]})
    await send({"type": "http.response.body", "body": data})


async def _error(send: Send, status: int, body: object, extra: Headers | None = None) -> None:
    data = json.dumps(body).encode()  # ASCII: a lone surrogate in a message is escaped
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", b"%d" % len(data)), *(extra or [])]})
    await send({"type": "http.response.body", "body": data})


async def _close(body: AsyncIterator[bytes]) -> None:
    aclose = getattr(body, "aclose", None)
    if aclose is not None:
        await aclose()


def split(raw_path: bytes, at: int) -> bytes | None:
    """What follows the first `at` segments of `raw_path` (as sent, still encoded)."""
    parts = raw_path.split(b"/", at + 1)
    return parts[at + 1] if len(parts) == at + 2 else None


# --- each proxy's access check ----------------------------------------------------------

def invoke_admit(services: Services, caller: Caller | None, name: str,
                 sessions: AnnotatorSessions | None = None) -> Admit:
    """A service's: `caller` may invoke `name` (None: the gateway checked its token),
    and how long to wait for a ready replica (a service scaled to zero starts). An
    annotate session is reached only with `sessions` (never from the gateway), by a
    caller who may also read its dataset."""
    async def admit() -> Forward:
        wait = services.admit_now(caller, name)  # in memory while the store is unchanged
        if wait is None:
            wait = await run_in_threadpool(services.admit, caller, name)
        doc = services.admitted(name)
        if doc is not None and is_session(doc):
            if sessions is None:
                raise NotFound(f"no service named {name!r} here: an annotate session is "
                               f"opened through `nai service forward {name}`")
            return await run_in_threadpool(sessions.admit, caller, name, doc, wait)

        async def forward(method: str, target: str, headers: Headers, body: bytes) -> Reply:
            return await services.invoke(name, wait, method, target, headers, body)
        return forward
    return admit


# --- the socket routes, in front of the router -------------------------------------------

class Relays:
    """ASGI middleware: `/v1/services/{name}/invoke/{path}` answered here; a request
    whose parameters the route would refuse goes on to it."""

    def __init__(self, app: ASGIApp, service: UseCases) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path, method = scope["path"], scope["method"]
            if method in INVOKE_METHODS and (m := _INVOKE.fullmatch(path)):
                name = m[1]
                if len(name) <= 64 and _NAME.fullmatch(name):
                    services, sessions = self.service.services, self.service.annotating
                    await self._serve(scope, receive, send, INVOKE_BODY,
                                      lambda caller: invoke_admit(services, caller, name,
                                                                  sessions))
                    return
        await self.app(scope, receive, send)

    async def _serve(self, scope: Scope, receive: Receive, send: Send, cap: int,
                     admit: Callable[[Caller], Admit]) -> None:
        rest = split(scope.get("raw_path") or b"", 4)
        if rest is None or unquote(rest.decode("latin-1")) != scope["path"].split("/", 5)[5]:
            await self.app(scope, receive, send)  # an encoded `/` before it: the router's
            return
        try:
            caller = self.service.accounts.resolve((scope.get("state") or {}).get(PEER_KEY))
        except ApiError as exc:
            await _error(send, exc.status, exc.to_body())
            return
        await relay(scope, receive, send, admit(caller), cap=cap, rest=rest)

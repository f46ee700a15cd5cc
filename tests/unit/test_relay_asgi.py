"""api/relay: the one relay of the services' and the annotate apps' proxies, as plain
ASGI against a fake target."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from nai_server.api.relay import WHOLE_ANSWER, Relays, relay, split
from nai_server.protocol import NotFound


@dataclass
class Reply:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: AsyncIterator[bytes]
    length: int | None


@dataclass
class Target:
    """Records what it was sent; answers `pieces`."""

    pieces: list[bytes] = field(default_factory=lambda: [b"ok"])
    sized: bool = True
    refuse: bool = False
    sent: list[tuple[str, str, list[tuple[bytes, bytes]], bytes]] = field(default_factory=list)
    closed: bool = False

    async def admit(self) -> Any:
        if self.refuse:
            raise NotFound("no service named 'x' that you may see")
        return self.forward

    async def forward(self, method: str, target: str, headers: list[tuple[bytes, bytes]],
                      body: bytes) -> Reply:
        self.sent.append((method, target, headers, body))

        async def pieces() -> AsyncIterator[bytes]:
            try:
                for piece in self.pieces:
                    yield piece
            finally:
                self.closed = True
        length = sum(map(len, self.pieces)) if self.sized else None
        return Reply(200, [(b"x-replica", b"1")], pieces(), length)


def run(target: Target, body: list[bytes], *, method: str = "POST", cap: int = 1 << 20,
        query: bytes = b"", drop: frozenset[bytes] = frozenset()) -> list[dict[str, Any]]:
    scope = {"type": "http", "method": method, "query_string": query,
             "headers": [(b"content-type", b"application/json"), (b"authorization", b"t")],
             "asgi": {"spec_version": "2.3"}}
    incoming = [{"type": "http.request", "body": b, "more_body": i < len(body) - 1}
                for i, b in enumerate(body)]
    out: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if incoming:
            return incoming.pop(0)
        await asyncio.sleep(3600)  # the caller stays (a stream watches for it to go)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        out.append(message)

    asyncio.run(relay(scope, receive, send, target.admit, cap=cap, rest=b"a%20b/c",
                      drop=drop))
    return out


def test_the_request_goes_on_as_sent_and_a_small_answer_comes_back_whole() -> None:
    target = Target()
    out = run(target, [b'{"in', b'puts": 1}'], query=b"k=%2F")
    assert target.sent == [("POST", "/a%20b/c?k=%2F", [
        (b"content-type", b"application/json"), (b"authorization", b"t")], b'{"inputs": 1}')]
    start, body = out
    assert start["status"] == 200
    assert (b"content-length", b"2") in start["headers"] and (b"x-replica", b"1") in start[
        "headers"]
    assert body == {"type": "http.response.body", "body": b"ok"} and target.closed


def test_dropped_headers_do_not_reach_the_target() -> None:
    target = Target()
    run(target, [b""], drop=frozenset({b"authorization"}))
    assert [k for k, _ in target.sent[0][2]] == [b"content-type"]


def test_a_refused_caller_gets_the_error_and_the_target_nothing() -> None:
    target = Target(refuse=True)
    start, body = run(target, [b"x"])
    assert start["status"] == 404 and target.sent == []
    assert json.loads(body["body"])["error"]["code"] == "not_found"


def test_a_body_over_the_cap_is_refused_before_it_is_sent() -> None:
    target = Target()
    start, body = run(target, [b"x" * 10, b"y" * 10], cap=15)
    assert start["status"] == 413 and target.sent == []
    assert json.loads(body["body"])["error"]["code"] == "too_large"


def test_a_large_or_unsized_answer_is_streamed_and_closed() -> None:
    for target in (Target(pieces=[b"a" * WHOLE_ANSWER, b"b"]), Target(sized=False)):
        out = run(target, [b""])
        assert out[0]["status"] == 200
        assert not any(k == b"content-length" for k, _ in out[0]["headers"])
        assert b"".join(m.get("body", b"") for m in out[1:]) == b"".join(target.pieces)
        assert target.closed


def test_split_keeps_the_path_as_sent() -> None:
    assert split(b"/v1/services/x/invoke/a%2Fb/c", 4) == b"a%2Fb/c"
    assert split(b"/v1/services/x/invoke", 4) is None


class FakeServices:
    def __init__(self) -> None:
        self.invoked: list[tuple[str, str]] = []

    def admit_now(self, caller: object, name: str) -> float:
        return 1.0

    def admitted(self, name: str) -> None:
        return None  # a model's service, not an annotate session

    async def invoke(self, name: str, wait: float, method: str, target: str,
                     headers: object, body: bytes) -> Reply:
        self.invoked.append((name, target))

        async def nothing() -> AsyncIterator[bytes]:
            yield b"{}"
        return Reply(200, [], nothing(), 2)


class FakeUseCases:
    def __init__(self) -> None:
        self.services = FakeServices()
        self.annotating = None
        self.accounts = self

    def resolve(self, peer: object) -> object:
        if peer is None:
            raise NotFound("no peer")
        return peer


def through(raw_path: bytes, path: str) -> tuple[list[str], list[tuple[str, str]]]:
    """A request through `Relays`: (what reached the router, what reached a replica)."""
    service = FakeUseCases()
    routed: list[str] = []

    async def router(scope: Any, receive: Any, send: Any) -> None:
        routed.append(scope["path"])

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: dict[str, Any]) -> None:
        pass

    scope = {"type": "http", "method": "GET", "path": path, "raw_path": raw_path,
             "query_string": b"", "headers": [], "state": {"peer": "someone"}}
    asyncio.run(Relays(router, service)(scope, receive, send))  # type: ignore[arg-type]
    return routed, service.services.invoked


def test_relays_serves_the_invoke_path_before_the_router_as_sent() -> None:
    assert through(b"/v1/services/reg/invoke/a%20b/c", "/v1/services/reg/invoke/a b/c") == (
        [], [("reg", "/a%20b/c")])


def test_relays_leaves_what_the_routes_would_refuse_to_them() -> None:
    for raw, path in [(b"/v1/services/-bad/invoke/x", "/v1/services/-bad/invoke/x"),
                      (b"/v1/services/a%2Fb/invoke/x", "/v1/services/a/b/invoke/x"),
                      (b"/v1/services/reg/invoke%2Fx/y", "/v1/services/reg/invoke/x/y"),
                      (b"/v1/services/reg/logs", "/v1/services/reg/logs"),
                      (b"/v1/jobs/0/app/x", "/v1/jobs/0/app/x")]:
        assert through(raw, path) == ([path], [])

"""An idempotent request survives one connection that ended before any answer; a
request that changes state, or a host-key or login refusal, is never sent twice."""

from __future__ import annotations

from typing import Any

import httpcore
import httpx
import pytest

from nai_server.protocol import ConnectionFailed
from nai_tui.remote.hostkeys import LoginFailed
from nai_tui.remote.transports import BackendTransport

ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: application/json\r\n\r\n{}"


class Stream(httpcore.NetworkStream):
    def __init__(self, failure: BaseException | None) -> None:
        self.failure = failure
        self.sent = b""

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        if self.failure is not None:
            raise self.failure
        data, self.answer = getattr(self, "answer", ANSWER), b""
        return data

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self.sent += buffer

    def close(self) -> None:
        pass

    def get_extra_info(self, info: str) -> Any:
        return False if info == "is_readable" else None


class Backend(httpcore.NetworkBackend):
    """Its first connection fails with `failure`; later ones answer."""

    def __init__(self, failure: BaseException) -> None:
        self.failures = [failure]
        self.dials = 0

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None,
                    socket_options: Any = None) -> httpcore.NetworkStream:
        self.dials += 1
        return Stream(self.failures.pop() if self.failures else None)

    def close(self) -> None:
        pass


def client(backend: Backend) -> httpx.Client:
    return httpx.Client(transport=BackendTransport(backend), base_url="http://nai")


def test_a_get_is_sent_again_after_a_connection_that_ended_unanswered() -> None:
    backend = Backend(ConnectionFailed("lab: ssh to 127.0.0.1 failed: exit status 255"))
    with client(backend) as http:
        assert http.get("/v1/me").json() == {}
    assert backend.dials == 2


def test_a_post_is_never_sent_twice() -> None:
    backend = Backend(ConnectionFailed("lab: ssh to 127.0.0.1 failed: exit status 255"))
    with client(backend) as http, pytest.raises(ConnectionFailed):
        http.post("/v1/jobs", json={})
    assert backend.dials == 1


def test_a_login_refusal_is_not_retried() -> None:
    backend = Backend(LoginFailed("lab: SSH login to host failed: no accepted key"))
    with client(backend) as http, pytest.raises(LoginFailed):
        http.get("/v1/me")
    assert backend.dials == 1

"""host/replica_http: how a replica's answer is read, and when its connection may be
used again, against raw bytes from the other end of a socket pair."""

from __future__ import annotations

import asyncio
import socket
import threading

import pytest

from nai_server.host.replica_http import Conn, ReplicaFailed, ReplicaPool


def ask(raw: bytes, method: str = "GET", close: bool = False,
        headers: list[tuple[bytes, bytes]] | None = None) -> tuple[int, list, bytes, bool, bytes]:
    """Send one request through a pool on a socket pair whose far end answers `raw`;
    (status, headers, body, pooled again, the request as it arrived)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    ours.setblocking(False)
    pool = ReplicaPool()

    async def go() -> tuple[int, list, bytes, bool, bytes]:
        conn = Conn("run", ours, lambda: ours)
        theirs.sendall(raw)
        if close:
            theirs.shutdown(socket.SHUT_WR)
        answer = await pool.exchange(conn, method, "/p?q=1", headers or [], b"hi", timeout=5)
        body = b"".join([chunk async for chunk in answer.body])
        return answer.status, answer.headers, body, pool.take("run") is not None, b""

    try:
        status, heads, body, pooled, _ = asyncio.run(go())
        theirs.settimeout(1)
        return status, heads, body, pooled, theirs.recv(65536)
    finally:
        theirs.close()
        ours.close()


def test_a_sized_answer_is_read_and_its_connection_kept() -> None:
    status, headers, body, pooled, request = ask(
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-A: 1\r\nX-A: 2\r\n\r\nabc")
    assert (status, body, pooled) == (200, b"abc", True)
    assert headers == [(b"x-a", b"1"), (b"x-a", b"2")]  # repeats kept, hop-by-hop gone
    assert request.startswith(b"GET /p?q=1 HTTP/1.1\r\n") and request.endswith(b"\r\n\r\nhi")


def test_informational_answers_are_skipped_and_chunks_joined() -> None:
    status, _, body, pooled, _ = ask(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nTransfer-Encoding: chunked"
        b"\r\n\r\n2\r\nab\r\n1\r\nc\r\n0\r\n\r\n")
    assert (status, body, pooled) == (201, b"abc", True)


def test_connection_close_and_a_body_until_the_close_are_not_pooled() -> None:
    assert ask(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx",
               close=True)[2:4] == (b"x", False)
    assert ask(b"HTTP/1.1 200 OK\r\n\r\nuntil the end", close=True)[2:4] == (
        b"until the end", False)


def test_bytes_beyond_the_answer_end_its_connection() -> None:
    for extra in (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", b"garbage"):
        status, _, body, pooled, _ = ask(
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx" + extra)
        assert (status, body, pooled) == (200, b"x", False)


def test_an_answer_to_head_has_no_body_and_is_not_pooled() -> None:
    status, _, body, pooled, _ = ask(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n",
                                     method="HEAD")
    assert (status, body, pooled) == (200, b"", False)


def test_what_is_not_http_or_is_cut_short_fails() -> None:
    with pytest.raises(ReplicaFailed):
        ask(b"SMTP ready\r\n\r\n")
    with pytest.raises(ReplicaFailed):
        ask(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nabc", close=True)
    with pytest.raises(ReplicaFailed):
        ask(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx",
            headers=[(b"x-evil", b"a\r\nx-injected: 1")])


def test_hop_by_hop_headers_of_the_caller_stay_behind() -> None:
    request = ask(b"HTTP/1.1 204 No Content\r\n\r\n", headers=[
        (b"Connection", b"close"), (b"Host", b"caller"), (b"X-Kept", b"1")])[4]
    head = request.split(b"\r\n\r\n")[0].lower()
    assert b"x-kept: 1" in head and b"connection" not in head and b"caller" not in head


def test_a_large_body_arrives_whole_after_its_head() -> None:
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    ours.setblocking(False)
    body = bytes(range(256)) * 1024  # over JOIN_BODY: sent apart from the head
    got = bytearray()

    def far_end() -> None:
        while not got.endswith(body):
            got.extend(theirs.recv(1 << 16))
        theirs.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

    async def go() -> int:
        answer = await ReplicaPool().exchange(Conn("run", ours, lambda: ours), "PUT", "/",
                                              [], body, timeout=5)
        return answer.status

    reader = threading.Thread(target=far_end, daemon=True)
    reader.start()
    try:
        assert asyncio.run(go()) == 200
        head, _, rest = bytes(got).partition(b"\r\n\r\n")
        assert b"content-length: %d" % len(body) in head and rest == body
    finally:
        theirs.close()
        ours.close()

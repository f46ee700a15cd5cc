"""host/replica_http: how a replica's answer is read, and when its connection may be
used again, against raw bytes from the other end of a socket pair."""

from __future__ import annotations

import asyncio
import itertools
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
    status, headers, body, pooled, _ = ask(
        b"HTTP/1.1 100 Continue\r\nX-I: 1\r\n\r\nHTTP/1.1 201 Created\r\nTransfer-Encoding: "
        b"chunked\r\nX-A: 1\r\n\r\n2\r\nab\r\n1\r\nc\r\n0\r\nX-Trailer: 1\r\n\r\n")
    assert (status, body, pooled) == (201, b"abc", True)
    assert headers == [(b"x-a", b"1")]  # neither the interim answer's nor the trailer


def test_connection_close_and_a_body_until_the_close_are_not_pooled() -> None:
    assert ask(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx",
               close=True)[2:4] == (b"x", False)
    assert ask(b"HTTP/1.1 200 OK\r\n\r\nuntil the end", close=True)[2:4] == (
        b"until the end", False)


def test_bytes_beyond_the_answer_end_its_connection() -> None:
    for extra in (b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", b"garbage",
                  b"HTTP/1.1 100 Continue\r\n\r\n" * 20):
        status, headers, body, pooled, _ = ask(
            b"HTTP/1.1 200 OK\r\nX-A: 1\r\nContent-Length: 1\r\n\r\nx" + extra)
        assert (status, body, pooled) == (200, b"x", False)
        assert headers == [(b"x-a", b"1")]  # the answer's, not the extra's


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


FLOOD = 16 << 20  # bytes a flooding replica offers at most: finite, should the caps fail


class Flood:
    """The far end of a socket pair that answers `start`, then `again` over and over
    (up to FLOOD bytes, then it waits) until the connection is closed on it."""

    def __init__(self, theirs: socket.socket, start: bytes, again: bytes) -> None:
        self.sock, self.start, self.again = theirs, start, again
        self.sent = 0
        self.cut = False  # the other end closed while it still had more to send
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.sock.recv(1 << 16)  # the request
        data = self.start + self.again * (FLOOD // len(self.again))
        view = memoryview(data)
        try:
            while self.sent < len(data):
                self.sent += self.sock.send(view[self.sent:self.sent + (1 << 16)])
        except OSError:
            self.cut = True


def flooded(start: bytes, again: bytes, read_body: bool = False) -> tuple[str, Flood]:
    """What a pool makes of a replica that sends `start` then `again` without end:
    the ReplicaFailed's message, and the flood as it stopped."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    ours.setblocking(False)
    flood = Flood(theirs, start, again)

    async def go() -> None:
        answer = await ReplicaPool().exchange(Conn("run", ours, lambda: ours), "GET", "/",
                                              [], b"", timeout=5)
        if read_body:
            async for _ in answer.body:
                pass

    try:
        with pytest.raises(ReplicaFailed) as failed:
            asyncio.run(go())
        ours.close()  # (closed already when the pool gave up on it)
        flood.thread.join(timeout=30)
        return str(failed.value), flood
    finally:
        theirs.close()
        ours.close()


def test_endless_headers_are_refused_at_the_cap_not_buffered() -> None:
    why, flood = flooded(b"HTTP/1.1 200 OK\r\n", b"x: y\r\n")
    assert "oversized response head" in why and "256 headers" in why, why
    assert flood.cut and flood.sent < FLOOD  # read no further: the replica was cut off


def test_an_endless_header_value_is_refused_at_the_size_cap() -> None:
    why, flood = flooded(b"HTTP/1.1 200 OK\r\nx: ", b"y" * 1024)
    assert "oversized response head" in why and "64 KiB" in why, why
    assert flood.cut and flood.sent < FLOOD


def test_endless_interim_answers_are_refused() -> None:
    why, flood = flooded(b"", b"HTTP/1.1 102 Processing\r\n\r\n")
    assert "interim (1xx)" in why, why
    assert flood.cut and flood.sent < FLOOD


def test_endless_trailers_cut_the_body_off() -> None:
    why, flood = flooded(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                         b"2\r\nab\r\n0\r\n", b"x: y\r\n", read_body=True)
    assert "trailers" in why, why
    assert flood.cut and flood.sent < FLOOD


def test_a_large_head_under_the_caps_is_relayed_whole() -> None:
    many = [(b"x-%d" % i, b"v" * 200) for i in range(250)]  # about 52 KiB
    head = b"".join(b"%s: %s\r\n" % pair for pair in many)
    status, headers, body, pooled, _ = ask(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n" + head
        + b"\r\nok")
    assert (status, body, pooled, headers) == (200, b"ok", True, many)


def test_a_replica_that_sends_without_pause_lets_other_tasks_run() -> None:
    """The socket already holds the whole answer, so each read returns at once: between
    two reads the event loop must still run other tasks (every other user's requests,
    and the deadlines), or a replica streaming without pause would hold the daemon."""
    body = b"x" * 150_000  # several reads, and still within a socket pair's buffer
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    ours.setblocking(False)
    theirs.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)

    async def go() -> list[int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        other = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        seen = []
        answer = await ReplicaPool().exchange(Conn("run", ours, lambda: ours), "GET", "/",
                                              [], b"", timeout=5)
        async for _chunk in answer.body:
            seen.append(ticks)
        other.cancel()
        return seen

    try:
        seen = asyncio.run(go())
    finally:
        theirs.close()
        ours.close()
    assert len(seen) >= 3
    assert all(a < b for a, b in itertools.pairwise(seen)), seen

"""HTTP/1.1 exchanges with a replica over its socket, streamed both ways, on
connections kept alive in a small pool per replica run.

A request goes out with the caller's headers less the hop-by-hop ones; the answer's
status and headers come back first, then its body as it arrives. The replica is the
user's program: every wait has a deadline, and whatever it sends is parsed by
httptools (llhttp, the C parser the daemon's own HTTP server uses), which refuses what
is not HTTP. (h11 did this before, at about ten times the CPU per exchange: a third of
the daemon's time on a relayed request.) llhttp bounds nothing it keeps, so `_Reading`
caps what comes before the body (MAX_HEAD, MAX_HEADERS, MAX_INTERIM): a replica that
sends headers without end is cut off there, not at its deadline.

Connections are made by `ReplicaHost.connect` (a socket of the owner's, the peer a
process of the owner's: checked once per connection, which keeps its peer for life)
and kept per `key` (the replica's run: a restarted replica is a new run, so its old
connections are never used again; `keep` closes them). A connection goes back to the
pool only after a whole answer that left it reusable (no `Connection: close`, nothing
sent beyond it), and is taken out only while the replica has sent nothing on it since:
unsolicited bytes or a close end it. A request on a reused connection that the
replica closed before answering (its keep-alive timeout) is sent once more on a new one.
"""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import AsyncIterator, Callable, Hashable, Iterable
from dataclasses import dataclass

import httptools

from nai_server.host.replica_link import LinkSocket, greet

HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te",
    b"trailer", b"trailers", b"transfer-encoding", b"upgrade", b"host", b"content-length",
})
READ_SIZE = 1 << 16
IDLE_MAX = 64  # idle connections kept per replica run
JOIN_BODY = 1 << 16  # request bodies up to this size go out with the head, in one write
LINK_TIMEOUT = 5.0  # seconds to connect a TCP link and prove its token, at most
# What a replica may send before its answer's body. llhttp sets no limit on a head: each
# header would be kept (about 19 bytes of the daemon's memory per byte sent) for as long
# as the replica keeps sending, with only the request's timeout to end it.
MAX_HEAD = 64 * 1024  # bytes of an answer's head, interim answers included, at most
MAX_HEADERS = 256  # headers of one answer, at most
MAX_INTERIM = 16  # 1xx answers before the answer, at most
_PEEK = socket.MSG_PEEK | socket.MSG_DONTWAIT
_TOKEN = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # a method, a header's name
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")  # no line breaks in a header
_BAD_TARGET = re.compile(rb"[\x00-\x20\x7f-\xff]")
_PARSE_ERRORS = (httptools.HttpParserError, httptools.HttpParserUpgrade)


class ReplicaFailed(Exception):
    """The replica did not answer with HTTP in time; nothing was sent to the caller."""


class _ClosedEarly(ReplicaFailed):
    """The replica closed a connection before a byte of the answer."""


@dataclass
class Answer:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: AsyncIterator[bytes]
    length: int | None = None  # its Content-Length, if it has one (the parser checked it)


class Conn:
    """A connected non-blocking socket to one replica run, and its HTTP state."""

    __slots__ = ("connect", "key", "reused", "sock")

    def __init__(self, key: Hashable, sock: socket.socket,
                 connect: Callable[[], socket.socket]) -> None:
        self.key = key
        self.sock = sock
        self.connect = connect  # how to make another, for a retry
        self.reused = False

    def idle_and_open(self) -> bool:
        """Nothing sent by the replica since the last answer, and not closed."""
        try:
            self.sock.recv(1, _PEEK)  # a byte: unsolicited; none: closed
        except BlockingIOError:
            return True
        except OSError:
            pass
        return False

    def close(self) -> None:
        self.sock.close()


class ReplicaPool:
    """Idle connections by replica run; used from the event loop only."""

    def __init__(self, idle_max: int = IDLE_MAX) -> None:
        self.idle_max = idle_max
        self._idle: dict[Hashable, list[Conn]] = {}
        self.opened = 0  # connections made, for tests and the curious

    def take(self, key: Hashable) -> Conn | None:
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            if conn.idle_and_open():
                conn.reused = True
                return conn
            conn.close()
        return None

    def put(self, conn: Conn) -> None:
        idle = self._idle.setdefault(conn.key, [])
        if len(idle) < self.idle_max:
            idle.append(conn)
        else:
            conn.close()

    def keep(self, keys: Iterable[Hashable]) -> None:
        """Close the idle connections of every run not in `keys` (gone, restarted)."""
        live = set(keys)
        for key in [k for k in self._idle if k not in live]:
            for conn in self._idle.pop(key):
                conn.close()

    def close(self) -> None:
        self.keep(())

    def checkout(self, key: Hashable, connect: Callable[[], socket.socket]) -> Conn:
        """A pooled connection to the replica run `key`, or a new one from `connect`
        (which raises if the replica may not be talked to)."""
        conn = self.take(key)
        if conn is None:
            conn = Conn(key, connect(), connect)
            self.opened += 1
        return conn

    async def exchange(self, conn: Conn, method: str, target: str,
                       headers: list[tuple[bytes, bytes]], body: bytes,
                       timeout: float) -> Answer:
        """Send the request on `conn` (from `checkout`); the answer's head within
        `timeout`, its body read with `timeout` between pieces."""
        if conn.reused:
            try:
                return await self._exchange(conn, method, target, headers, body, timeout)
            except _ClosedEarly:  # closed while idle: once more, on a new connection
                conn = Conn(conn.key, conn.connect(), conn.connect)  # may raise: stopping
                self.opened += 1
        return await self._exchange(conn, method, target, headers, body, timeout)

    async def _exchange(self, conn: Conn, method: str, target: str,
                        headers: list[tuple[bytes, bytes]], body: bytes,
                        timeout: float) -> Answer:
        loop = asyncio.get_running_loop()
        answer = _Reading(head_only=method == "HEAD")
        if isinstance(conn.sock, LinkSocket) and not conn.sock.ready:  # a new TCP link
            try:
                await greet(conn.sock, min(timeout, LINK_TIMEOUT))
            except BaseException:
                conn.close()
                raise
        try:
            head = _request_head(method, target, headers, len(body))
            async with asyncio.timeout(timeout):
                if len(body) <= JOIN_BODY:
                    await loop.sock_sendall(conn.sock, head + body)  # one write
                else:  # not copied
                    await loop.sock_sendall(conn.sock, head)
                    await loop.sock_sendall(conn.sock, body)
                first = True
                while answer.status is None:
                    await _fill(loop, conn.sock, answer, first)
                    first = False
        except (*_PARSE_ERRORS, OSError, TimeoutError) as exc:
            conn.close()
            if isinstance(exc, BrokenPipeError | ConnectionResetError):
                raise _ClosedEarly(_why(exc)) from exc
            raise ReplicaFailed(_why(exc)) from exc
        except BaseException:
            conn.close()
            raise
        return Answer(answer.status, answer.headers, self._body(conn, answer, timeout),
                      answer.length)

    async def _body(self, conn: Conn, answer: _Reading, timeout: float) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        reusable = False
        try:
            while True:
                if answer.chunks:
                    chunks, answer.chunks = answer.chunks, []
                    for chunk in chunks:
                        yield chunk
                if answer.done:
                    reusable = answer.reusable()
                    return
                async with asyncio.timeout(timeout):
                    await _fill(loop, conn.sock, answer, False)
        except (*_PARSE_ERRORS, OSError, TimeoutError) as exc:
            raise ReplicaFailed(_why(exc)) from exc
        finally:
            if reusable:
                self.put(conn)
            else:
                conn.close()


class _Reading:
    """One answer as httptools' callbacks give it: status and headers, then its body
    in pieces as they arrive; whether the connection may carry another request."""

    __slots__ = ("body_seen", "chunks", "done", "extra", "framing", "head_only", "headers",
                 "interim", "keep_alive", "length", "parser", "refused", "sized", "status")

    def __init__(self, head_only: bool) -> None:
        self.head_only = head_only  # an answer to HEAD: no body, whatever it announces
        self.parser = httptools.HttpResponseParser(self)
        self.status: int | None = None
        self.headers: list[tuple[bytes, bytes]] = []
        self.length: int | None = None
        self.sized = False  # a Content-Length or chunked: the body's end is known
        self.chunks: list[bytes] = []
        self.done = False
        self.extra = False  # bytes beyond the answer: unasked for
        self.keep_alive = False
        self.body_seen = 0  # bytes of body parsed so far
        self.framing = 0  # bytes fed since the last of the body (or the first byte)
        self.interim = 0  # 1xx answers so far
        self.refused: str | None = None  # why the answer is dropped, from a callback

    def feed(self, data: bytes) -> None:
        """Parse the next bytes; ReplicaFailed once the replica sent more than the caps
        let through: a head over MAX_HEAD bytes or MAX_HEADERS headers, more than
        MAX_INTERIM 1xx answers, or MAX_HEAD bytes in a row that carry no body (chunk
        framing, trailers). Each feed is at most READ_SIZE bytes, so the parser's own
        buffers (a header's name and value, kept whole) stay as small."""
        seen = self.body_seen
        try:
            self.parser.feed_data(data)
        except _PARSE_ERRORS:
            if not self.done:
                raise
            self.extra = True  # garbage after a whole answer
        if self.refused is not None:
            raise ReplicaFailed(self.refused)
        if self.done:
            return
        self.framing = self.framing + len(data) if self.body_seen == seen else 0
        if self.framing > MAX_HEAD:
            if self.status is None:
                raise ReplicaFailed(
                    f"the replica sent an oversized response head (over "
                    f"{MAX_HEAD // 1024} KiB of status line and headers); its answer "
                    f"was dropped: the service's server must send a smaller head")
            raise ReplicaFailed(
                f"the replica sent over {MAX_HEAD // 1024} KiB of chunk framing or "
                f"trailers without body; its answer was cut off")

    def eof(self) -> None:
        """The replica closed: the end of a body sent until the close, or cut short."""
        if self.status is not None and not self.done and not self.sized:
            self.done = True
        elif not self.done:
            raise ReplicaFailed("the replica closed the connection before the end of "
                                "its answer")

    def reusable(self) -> bool:
        return self.keep_alive and not self.extra and not self.head_only

    # httptools' callbacks

    def on_message_begin(self) -> None:
        if self.done:  # the answer's headers stay as they are, for the Answer
            self.extra = True
            return
        self.headers = []  # an interim answer's are dropped

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.status is not None:
            return  # a trailer: the head was relayed already, nothing to add it to
        if len(self.headers) >= MAX_HEADERS:
            self.refused = (f"the replica sent an oversized response head (more than "
                            f"{MAX_HEADERS} headers); its answer was dropped: the "
                            f"service's server must send fewer headers")
            return
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        if self.done:
            return  # an answer beyond the answer: `extra`, never read
        status = self.parser.get_status_code()
        if status < 200:  # 1xx: informational, the answer follows
            self.interim += 1
            if self.interim > MAX_INTERIM:
                self.refused = (f"the replica sent more than {MAX_INTERIM} interim (1xx) "
                                f"answers before its answer; it was dropped")
            return
        self.status = status
        self.sized = status in (204, 304)
        for name, value in self.headers:
            if name == b"content-length":
                self.length, self.sized = int(value), True
            elif name == b"transfer-encoding":
                self.sized = True
        self.headers = _headers(self.headers)
        if self.head_only:
            self.done = True  # and the connection closed: its framing is unknown

    def on_body(self, body: bytes) -> None:
        if not self.done:
            self.body_seen += len(body)
            self.chunks.append(body)

    def on_message_complete(self) -> None:
        if self.status is not None and not self.done:
            self.done = True
            self.keep_alive = self.parser.should_keep_alive()


def _request_head(method: str, target: str, headers: list[tuple[bytes, bytes]],
                  length: int) -> bytes:
    """The request's head, for a body of `length` bytes."""
    verb, where = method.encode(), target.encode("ascii")
    if not _TOKEN.fullmatch(verb) or not where or _BAD_TARGET.search(where):
        raise ReplicaFailed(f"{method} {target!r} cannot be sent on as HTTP")
    head = [b"%s %s HTTP/1.1\r\nhost: replica\r\ncontent-length: %d\r\n"
            % (verb, where, length)]
    for name, value in headers:
        if name.lower() in HOP_BY_HOP:
            continue
        if not _TOKEN.fullmatch(name) or _BAD_VALUE.search(value):
            raise ReplicaFailed(f"the request's header {name!r} cannot be sent on as HTTP")
        head.append(b"%s: %s\r\n" % (name, value))
    head.append(b"\r\n")
    return b"".join(head)


async def _fill(loop: asyncio.AbstractEventLoop, sock: socket.socket, answer: _Reading,
                first: bool) -> None:
    """What the replica sent next, parsed; `first`: nothing of the answer came yet, so
    a close now is `_ClosedEarly`."""
    data = await loop.sock_recv(sock, READ_SIZE)
    # sock_recv returns at once, without letting any other task run, while data waits:
    # a replica sending without pause would hold the event loop (every other request,
    # and every deadline, its own included) for as long as it sent.
    await asyncio.sleep(0)
    if not data:
        if first:
            raise _ClosedEarly("the replica closed the connection without answering")
        answer.eof()
    else:
        answer.feed(data)


async def exchange(sock: socket.socket, method: str, target: str,
                   headers: list[tuple[bytes, bytes]], body: bytes,
                   timeout: float) -> Answer:
    """One request on a connected socket of its own, closed once the answer's body ends
    or is dropped (no pool: a job's app is asked seldom). Deadlines as the pool's."""
    sock.setblocking(False)
    conn = Conn(None, sock, lambda: sock)
    return await ReplicaPool(idle_max=0).exchange(conn, method, target, headers, body, timeout)


def _headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    return [(k, v) for k, v in headers if k.lower() not in HOP_BY_HOP]


def _why(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "the replica did not answer in time"
    if isinstance(exc, _PARSE_ERRORS):
        return f"the replica's answer is not HTTP: {exc}"
    return f"the connection to the replica failed: {exc}"


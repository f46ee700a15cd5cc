"""HTTP/1.1 exchanges with a replica over its socket, streamed both ways (h11), on
connections kept alive in a small pool per replica run.

A request goes out with the caller's headers less the hop-by-hop ones; the answer's
status and headers come back first, then its body as it arrives. The replica is the
user's program: every wait has a deadline, and whatever it sends is parsed by h11,
which refuses what is not HTTP.

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
import socket
from collections.abc import AsyncIterator, Callable, Hashable, Iterable
from dataclasses import dataclass

import h11

HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te",
    b"trailer", b"trailers", b"transfer-encoding", b"upgrade", b"host", b"content-length",
})
READ_SIZE = 1 << 16
IDLE_MAX = 64  # idle connections kept per replica run
_PEEK = socket.MSG_PEEK | socket.MSG_DONTWAIT


class ReplicaFailed(Exception):
    """The replica did not answer with HTTP in time; nothing was sent to the caller."""


class _ClosedEarly(ReplicaFailed):
    """The replica closed a connection before a byte of the answer."""


@dataclass
class Answer:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: AsyncIterator[bytes]
    length: int | None = None  # its Content-Length, if it has one (h11 checked it)


class Conn:
    """A connected non-blocking socket to one replica run, and its HTTP state."""

    __slots__ = ("connect", "http", "key", "reused", "sock")

    def __init__(self, key: Hashable, sock: socket.socket,
                 connect: Callable[[], socket.socket]) -> None:
        self.key = key
        self.sock = sock
        self.connect = connect  # how to make another, for a retry
        self.http = h11.Connection(h11.CLIENT)
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
        http = conn.http
        try:
            out = http.send(h11.Request(
                method=method, target=target,
                headers=[(b"host", b"replica"), (b"content-length", str(len(body)).encode()),
                         *_headers(headers)]))
            if body:
                out += http.send(h11.Data(data=body))
            out += http.send(h11.EndOfMessage())
            async with asyncio.timeout(timeout):
                await loop.sock_sendall(conn.sock, out)
                event = await _next(loop, conn, True)
                while isinstance(event, h11.InformationalResponse):
                    event = await _next(loop, conn, False)
            if not isinstance(event, h11.Response):
                raise ReplicaFailed("the replica closed the connection without answering")
        except (h11.ProtocolError, OSError, TimeoutError) as exc:
            conn.close()
            if isinstance(exc, BrokenPipeError | ConnectionResetError):
                raise _ClosedEarly(_why(exc)) from exc
            raise ReplicaFailed(_why(exc)) from exc
        except BaseException:
            conn.close()
            raise
        length = next((int(v) for k, v in event.headers if k == b"content-length"), None)
        return Answer(event.status_code, _headers(list(event.headers)),
                      self._body(conn, timeout), length)

    async def _body(self, conn: Conn, timeout: float) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        reusable = False
        try:
            while True:
                async with asyncio.timeout(timeout):
                    event = await _next(loop, conn, False)
                if isinstance(event, h11.Data):
                    yield bytes(event.data)
                elif isinstance(event, h11.EndOfMessage):
                    http = conn.http
                    reusable = (http.our_state is h11.DONE and http.their_state is h11.DONE
                                and not http.trailing_data[0])
                    return
                elif isinstance(event, h11.ConnectionClosed):
                    return
                else:
                    raise ReplicaFailed(f"unexpected {type(event).__name__} from the replica")
        except (h11.ProtocolError, OSError, TimeoutError) as exc:
            raise ReplicaFailed(_why(exc)) from exc
        finally:
            if reusable:
                conn.http.start_next_cycle()
                self.put(conn)
            else:
                conn.close()


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


async def _next(loop: asyncio.AbstractEventLoop, conn: Conn,
                first: bool) -> h11.Event | type[h11.PAUSED] | type[h11.NEED_DATA]:
    """The next event from the replica; `first`: nothing of the answer came yet, so a
    close now is `_ClosedEarly`."""
    http = conn.http
    while True:
        event = http.next_event()
        if event is not h11.NEED_DATA:
            return event
        data = await loop.sock_recv(conn.sock, READ_SIZE)
        if first and not data:
            raise _ClosedEarly("the replica closed the connection without answering")
        first = False
        http.receive_data(data)


def _why(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "the replica did not answer in time"
    if isinstance(exc, h11.ProtocolError):
        return f"the replica's answer is not HTTP: {exc}"
    return f"the connection to the replica failed: {exc}"


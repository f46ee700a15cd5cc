"""One HTTP/1.1 exchange with a replica over its socket, streamed both ways (h11).

The request goes out with `Connection: close` and the caller's headers less the
hop-by-hop ones; the answer's status and headers come back first, then its body as it
arrives. The replica is the user's program: every wait has a deadline, and whatever it
sends is parsed by h11, which refuses what is not HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass

import h11

HOP_BY_HOP = frozenset({
    b"connection", b"keep-alive", b"proxy-authenticate", b"proxy-authorization", b"te",
    b"trailer", b"trailers", b"transfer-encoding", b"upgrade", b"host", b"content-length",
})
READ_SIZE = 1 << 16


class ReplicaFailed(Exception):
    """The replica did not answer with HTTP in time; nothing was sent to the caller."""


@dataclass
class Answer:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: AsyncIterator[bytes]


def _headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    return [(k, v) for k, v in headers if k.lower() not in HOP_BY_HOP]


async def exchange(sock: socket.socket, method: str, target: str,
                   headers: list[tuple[bytes, bytes]], body: bytes,
                   timeout: float) -> Answer:
    """Send the request on the connected socket; the answer's head within `timeout`,
    its body read with `timeout` between pieces. The socket is the callee's to close
    (when the body ends or is dropped)."""
    reader, writer = await asyncio.open_connection(sock=sock, limit=READ_SIZE)
    conn = h11.Connection(h11.CLIENT)
    try:
        out = conn.send(h11.Request(
            method=method, target=target,
            headers=[(b"host", b"replica"), (b"connection", b"close"),
                     (b"content-length", str(len(body)).encode()), *_headers(headers)]))
        out += conn.send(h11.Data(data=body)) if body else b""
        out += conn.send(h11.EndOfMessage())
        writer.write(out)
        await asyncio.wait_for(writer.drain(), timeout)
        event = await _next(conn, reader, timeout)
        while isinstance(event, h11.InformationalResponse):
            event = await _next(conn, reader, timeout)
        if not isinstance(event, h11.Response):
            raise ReplicaFailed("the replica closed the connection without answering")
    except (h11.ProtocolError, OSError, TimeoutError) as exc:
        writer.close()
        raise ReplicaFailed(_why(exc)) from exc
    except BaseException:
        writer.close()
        raise
    return Answer(event.status_code, _headers(list(event.headers)),
                  _body(conn, reader, writer, timeout))


async def _next(conn: h11.Connection, reader: asyncio.StreamReader,
                timeout: float) -> h11.Event | type[h11.PAUSED] | type[h11.NEED_DATA]:
    while True:
        event = conn.next_event()
        if event is not h11.NEED_DATA:
            return event
        data = await asyncio.wait_for(reader.read(READ_SIZE), timeout)
        conn.receive_data(data)


async def _body(conn: h11.Connection, reader: asyncio.StreamReader,
                writer: asyncio.StreamWriter, timeout: float) -> AsyncIterator[bytes]:
    try:
        while True:
            event = await _next(conn, reader, timeout)
            if isinstance(event, h11.Data):
                yield bytes(event.data)
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                return
            else:
                raise ReplicaFailed(f"unexpected {type(event).__name__} from the replica")
    except (h11.ProtocolError, OSError, TimeoutError) as exc:
        raise ReplicaFailed(_why(exc)) from exc
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


def _why(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "the replica did not answer in time"
    if isinstance(exc, h11.ProtocolError):
        return f"the replica's answer is not HTTP: {exc}"
    return f"the connection to the replica failed: {exc}"

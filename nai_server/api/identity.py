"""Who is on the other end of the socket: `SO_PEERCRED`, read once per connection.

uvicorn puts no peer credentials in the ASGI scope for unix sockets. This subclass
of its httptools protocol reads them from the transport's socket when the connection
is made and adds them to its per-connection app state, which uvicorn copies into
every request's scope as `request.state`. (httptools rather than h11: a C parser and
one copy fewer of every body byte; a 1 GiB upload cost the daemon a fifth less CPU.)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from nai_server.app.accounts import Peer

PEER_KEY = "peer"

log = logging.getLogger("nai.connections")


def peer_of(sock: socket.socket) -> Peer | None:
    """Credentials of a connected unix socket's peer, or None for other sockets."""
    if sock.family != socket.AF_UNIX:
        return None
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return Peer(pid=pid, uid=uid, gid=gid)


@dataclass(frozen=True)
class ConnectionLimits:
    """How many connections the daemon holds, and how long it waits on a silent one.

    Identity is known at accept, so a user over their cap is answered and dropped
    before any of their bytes are parsed: one user's idle connections (20,000 of
    them once used up every descriptor of the daemon) cannot crowd out the others.
    """

    per_user: int = 64  # connections one uid may hold open
    total: int = 4096  # connections of all capped uids together
    header_timeout: float = 30.0  # from a request's first byte to the end of its head
    # From accept to a request's first byte. Long: clients dial connections ahead of
    # need and may hash files for minutes before sending on one.
    idle_timeout: float = 3600.0
    exempt: frozenset[int] = frozenset({0})  # uids without caps (root, the daemon's own)


class LogThrottle:
    """At most one log line per `every` seconds; the next one says how many were left out."""

    def __init__(self, logger: logging.Logger, every: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.every = every
        self.clock = clock
        self.suppressed = 0
        self._next = -math.inf

    def log(self, level: int, msg: str, *args: object) -> bool:
        """Log (and return True) unless a line went out less than `every` seconds ago."""
        now = self.clock()
        if now < self._next:
            self.suppressed += 1
            return False
        if self.suppressed:
            msg += " (and %d more since the last such line)"
            args = (*args, self.suppressed)
        self.logger.log(level, msg, *args)
        self.suppressed = 0
        self._next = now + self.every
        return True


def error_response(status: int, code: str, message: str) -> bytes:
    """A complete HTTP response with the API's error body, for the connection to end on."""
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    head = (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\n"
            "content-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n")
    return head.encode() + body


class PeerCredProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with the peer's credentials in `request.state.peer`.

    With `limits` (see `guarded_protocol`) it also refuses connections over a cap and
    closes connections that stay silent or never finish a request head."""

    limits: ClassVar[ConnectionLimits | None] = None
    held: ClassVar[dict[int, int]] = {}  # uid -> open connections; one dict per subclass
    refusals: ClassVar[LogThrottle] = LogThrottle(log, 10.0)

    def connection_made(self, transport: Any) -> None:
        sock = transport.get_extra_info("socket")
        peer = peer_of(sock) if sock is not None else None
        self._peer_eof = False
        self._refused = False
        self._uid: int | None = None  # counted against this uid's cap
        self._timer: asyncio.TimerHandle | None = None
        limits = self.limits
        if limits is not None and peer is not None:
            if peer.uid in limits.exempt:
                self.limit_concurrency = None  # root can always reach the daemon
            else:
                refusal = self._refusal(limits, peer.uid)
                if refusal is not None:
                    self._refuse(transport, refusal, peer)
                    return
                self._uid = peer.uid
                self.held[peer.uid] = self.held.get(peer.uid, 0) + 1
        # A fresh dict per connection: the one passed in is shared by all connections.
        self.app_state = {**self.app_state, PEER_KEY: peer}
        super().connection_made(transport)
        if limits is not None:
            self._arm(limits.idle_timeout, self._idle_expired)

    def _refusal(self, limits: ConnectionLimits, uid: int) -> bytes | None:
        held = self.held.get(uid, 0)
        if held >= limits.per_user:
            return error_response(
                429, "too_many_connections",
                f"you already have {held} connections open to the nai server, the most one "
                "user may have; close some of your nai sessions (or the programs holding "
                "them) and try again")
        if len(self.connections) >= limits.total:
            return error_response(
                503, "server_busy",
                f"the nai server already holds {len(self.connections)} connections, the most "
                "it takes; try again in a moment, and tell its admins if this lasts")
        return None

    def _refuse(self, transport: Any, response: bytes, peer: Peer) -> None:
        """Answer and close at once: nothing of the request is read or parsed."""
        self._refused = True
        self.refusals.log(logging.WARNING, "refused a connection of uid %d (pid %d): %s",
                          peer.uid, peer.pid, response.split(b"\r\n", 1)[0].decode())
        transport.write(response)
        # A request already sent but left unread would turn the peer's end of the
        # answer into ECONNRESET: take (and drop) what is there before closing.
        sock = transport.get_extra_info("socket")
        with contextlib.suppress(OSError):
            for _ in range(16):
                if not os.read(sock.fileno(), 1 << 16):
                    break
        transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._refused:
            return
        self._disarm()
        if self._uid is not None:
            left = self.held.get(self._uid, 1) - 1
            if left > 0:
                self.held[self._uid] = left
            else:
                self.held.pop(self._uid, None)
            self._uid = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if not self._refused:
            super().data_received(data)

    # --- timeouts: uvicorn has only the keep-alive one, between requests ---

    def _arm(self, delay: float, callback: Callable[[], None]) -> None:
        self._disarm()
        self._timer = self.loop.call_later(delay, callback)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _idle_expired(self) -> None:
        self._timer = None
        if self.cycle is None and not self.transport.is_closing():
            self.transport.close()  # never began a request: nobody to answer

    def _head_expired(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        limits = self.limits
        assert limits is not None
        if self.cycle is not None and not self.cycle.response_complete:
            # A pipelined head behind a request still being answered (a log stream):
            # that request is legitimate however long it runs; look again later.
            self._arm(limits.header_timeout, self._head_expired)
            return
        self.transport.write(error_response(
            408, "request_timeout",
            f"the request's head did not arrive within {limits.header_timeout:g} s of its "
            "first byte; send the whole head at once"))
        self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self.limits is not None:
            self._arm(self.limits.header_timeout, self._head_expired)

    def on_headers_complete(self) -> None:
        # The head is in: what follows (a long upload, a followed log) may take its time.
        self._disarm()
        super().on_headers_complete()

    def eof_received(self) -> bool | None:  # type: ignore[override]
        """The client half-closed (a relay saw EOF on stdin): answer the request it
        already sent, then close. uvicorn would otherwise drop the connection at once."""
        self._peer_eof = True
        if self._refused:
            return None
        cycle = self.cycle
        if cycle is None or cycle.response_complete or cycle.more_body:
            # Idle, done, or cut off in the middle of a request body: nothing to answer.
            self.transport.close()
            return None
        return True  # keep our side open for the response

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # Close only once the last request sent before the EOF is answered: super()
        # has just started the next pipelined one, if any (self.cycle is the newest).
        if (self._peer_eof and not self.transport.is_closing()
                and (self.cycle is None or self.cycle.response_complete)):
            self.transport.close()


def guarded_protocol(limits: ConnectionLimits) -> type[PeerCredProtocol]:
    """A `PeerCredProtocol` with these limits and its own count of open connections."""
    return type("GuardedPeerCredProtocol", (PeerCredProtocol,),
                {"limits": limits, "held": {}, "refusals": LogThrottle(log, 10.0)})

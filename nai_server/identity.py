"""Who is on the other end of the socket: `SO_PEERCRED`, read once per connection.

uvicorn puts no peer credentials in the ASGI scope for unix sockets. This subclass
of its httptools protocol reads them from the transport's socket when the connection
is made and adds them to its per-connection app state, which uvicorn copies into
every request's scope as `request.state`. (httptools rather than h11: a C parser and
one copy fewer of every body byte; a 1 GiB upload cost the daemon a fifth less CPU.)
"""

from __future__ import annotations

import grp
import os
import pwd
import socket
import struct
from dataclasses import dataclass
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

PEER_KEY = "peer"


@dataclass(frozen=True)
class Peer:
    """The process at the other end of a unix socket connection."""

    pid: int
    uid: int
    gid: int


def peer_of(sock: socket.socket) -> Peer | None:
    """Credentials of a connected unix socket's peer, or None for other sockets."""
    if sock.family != socket.AF_UNIX:
        return None
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return Peer(pid=pid, uid=uid, gid=gid)


class PeerCredProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, with the peer's credentials in `request.state.peer`."""

    def connection_made(self, transport: Any) -> None:
        sock = transport.get_extra_info("socket")
        peer = peer_of(sock) if sock is not None else None
        # A fresh dict per connection: the one passed in is shared by all connections.
        self.app_state = {**self.app_state, PEER_KEY: peer}
        self._peer_eof = False
        super().connection_made(transport)

    def eof_received(self) -> bool | None:  # type: ignore[override]
        """The client half-closed (a relay saw EOF on stdin): answer the request it
        already sent, then close. uvicorn would otherwise drop the connection at once."""
        self._peer_eof = True
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


def user_name(uid: int) -> str | None:
    """The unix account name of a uid, or None if it has none."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


def unix_account(name: str) -> pwd.struct_passwd | None:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        return None


def unix_groups(name: str) -> list[int]:
    """Primary and supplementary gids of a unix user (what a job runs with)."""
    account = unix_account(name)
    if account is None:
        return []
    return os.getgrouplist(name, account.pw_gid)


def unix_group_name(gid: int) -> str | None:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return None

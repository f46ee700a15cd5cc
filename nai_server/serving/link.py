"""The authenticated TCP link between the daemon and a replica on another machine.

A replica that runs as a Slurm job may be on any node: the daemon cannot reach it
through a unix socket, nor learn who is at the other end of a TCP connection. So both
ends prove that they know a per-run secret, before any HTTP is exchanged on a
connection:

    daemon  -> replica   NAI-REPLICA/1 <nonce_d>\\r\\n
    replica -> daemon    <HMAC(token, "replica" nonce_d nonce_r)> <nonce_r>\\r\\n
    daemon  -> replica   <HMAC(token, "daemon" nonce_r nonce_d)>\\r\\n
    ... then HTTP/1.1, kept alive as on a unix socket

(nonces of 32 random bytes, in hex; HMAC-SHA256). The token is made by the daemon for
each replica run and written into the replica's root-owned directory, readable by its
owner only: another user can neither query the replica (the replica closes a
connection that does not prove the token) nor stand in for it on its port (the daemon
sends nothing a caller sent to a peer that does not prove it). Fresh nonces on both
sides: a recorded exchange replays nowhere.

This module holds the handshake's pure steps (both ends use them) and the replica's
side, a uvicorn protocol that holds back HTTP until the daemon has proved the token.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import os
import socket
from typing import Any

MAGIC = b"NAI-REPLICA/1"
NONCE_BYTES = 32
MAX_LINE = 256  # bytes of a handshake line, at most
HANDSHAKE_SECONDS = 10.0  # a connection that has not proved the token by then is closed


def new_token() -> str:
    return os.urandom(32).hex()


def nonce() -> bytes:
    return os.urandom(NONCE_BYTES)


def _mac(token: bytes, role: bytes, first: bytes, second: bytes) -> bytes:
    return hmac.new(token, role + b"\0" + first + second, hashlib.sha256).hexdigest().encode()


def hello(nonce_d: bytes) -> bytes:
    """The daemon's first line."""
    return MAGIC + b" " + nonce_d.hex().encode() + b"\r\n"


def read_hello(line: bytes) -> bytes | None:
    """The daemon's nonce from its first line; None: not a hello."""
    magic, _, value = line.strip().partition(b" ")
    return _unhex(value) if magic == MAGIC else None


def answer(token: bytes, nonce_d: bytes, nonce_r: bytes) -> bytes:
    """The replica's proof and its own nonce."""
    return _mac(token, b"replica", nonce_d, nonce_r) + b" " + nonce_r.hex().encode() + b"\r\n"


def read_answer(token: bytes, nonce_d: bytes, line: bytes) -> bytes | None:
    """The replica's nonce if its proof holds; None: it does not know the token."""
    proof, _, value = line.strip().partition(b" ")
    nonce_r = _unhex(value)
    if nonce_r is None or not hmac.compare_digest(proof, _mac(token, b"replica", nonce_d,
                                                              nonce_r)):
        return None
    return nonce_r


def finish(token: bytes, nonce_r: bytes, nonce_d: bytes) -> bytes:
    """The daemon's proof."""
    return _mac(token, b"daemon", nonce_r, nonce_d) + b"\r\n"


def read_finish(token: bytes, nonce_r: bytes, nonce_d: bytes, line: bytes) -> bool:
    return hmac.compare_digest(line.strip(), _mac(token, b"daemon", nonce_r, nonce_d))


def _unhex(value: bytes) -> bytes | None:
    try:
        raw = bytes.fromhex(value.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return None
    return raw if len(raw) == NONCE_BYTES else None


def guarded_protocol(token: bytes) -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol behind the handshake: nothing reaches the app from a
    connection until its peer has proved the token (module docstring)."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class Guarded(HttpToolsProtocol):
        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            sock = transport.get_extra_info("socket")
            if sock is not None:  # an answer's head and body go out at once (no Nagle)
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._held = b""
            self._nonce_d: bytes | None = None
            self._nonce_r = nonce()
            self._proved = False
            self._deadline = asyncio.get_running_loop().call_later(
                HANDSHAKE_SECONDS, transport.close)

        def connection_lost(self, exc: Exception | None) -> None:
            self._deadline.cancel()
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            if self._proved:
                return super().data_received(data)
            self._held += data
            while not self._proved and b"\n" in self._held:
                line, _, self._held = self._held.partition(b"\n")
                if self._nonce_d is None:
                    self._nonce_d = read_hello(line)
                    if self._nonce_d is None:
                        return self.transport.close()
                    self.transport.write(answer(token, self._nonce_d, self._nonce_r))
                elif read_finish(token, self._nonce_r, self._nonce_d, line):
                    self._proved = True
                    self._deadline.cancel()
                else:
                    return self.transport.close()
            if len(self._held) > MAX_LINE:
                return self.transport.close()
            if self._proved and self._held:
                held, self._held = self._held, b""
                super().data_received(held)
            return None

    return Guarded

"""The daemon's end of the TCP link to a replica on another machine (the handshake and
why: nai_server/serving/link.py).

A replica is linked by TCP when its directory (the daemon's) holds `token`, the run's
secret, which the daemon wrote for the replica's owner alone (0400, the owner's; no
other file may take its place: the directory is root's). The replica writes where it
listens, "IP:PORT", to `run/address`; the daemon reads that without following links
and only from a regular file of the owner's, connects with a deadline, and talks HTTP
on the connection only once the peer has proved that it knows the token. The address
is an IP, never a name: no DNS lookup in the daemon's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import socket
import stat
from pathlib import Path

from nai_server.host.user_socket import DIR_FLAGS
from nai_server.serving import link

TOKEN = "token"  # in the replica's directory
ADDRESS = "address"  # in its run/ directory, written by the replica
MAX_FILE = 256  # bytes of the token or the address file read at most


class ReplicaUnreachable(Exception):
    """The replica's socket is missing, not the user's, refused, or not answering."""


class LinkSocket(socket.socket):
    """A TCP socket to a replica, not yet connected: `greet` (or `greet_sync`)
    connects it and proves the token both ways before it carries HTTP."""

    __slots__ = ("ready", "target", "token")

    def __init__(self, family: int, target: tuple[str, int], token: bytes) -> None:
        super().__init__(family, socket.SOCK_STREAM)
        self.target = target
        self.token = token
        self.ready = False


def linked(where: Path) -> bool:
    """Whether the replica of this directory is reached over the TCP link."""
    return os.path.lexists(where / TOKEN)


def write_token(where: Path, uid: int | None, gid: int | None) -> None:
    """A new secret for this run, the owner's alone (the directory is new and root's)."""
    fd = os.open(where / TOKEN, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o400)
    try:
        os.write(fd, link.new_token().encode() + b"\n")
        if uid is not None:
            os.fchown(fd, uid, gid if gid is not None else -1)
    finally:
        os.close(fd)


def _read_small(dir_fd: int, name: str, uid: int | None) -> bytes:
    """A regular file's bytes (of `uid`'s, when given), without following links."""
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                 dir_fd=dir_fd)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or (uid is not None and info.st_uid != uid):
            raise ReplicaUnreachable(f"{name} is not a file of the replica's user")
        return os.read(fd, MAX_FILE)
    finally:
        os.close(fd)


def open_link(where: Path, uid: int) -> LinkSocket:
    """An unconnected link to the replica of `where`, run by `uid`."""
    try:
        dir_fd = os.open(where, DIR_FLAGS)
    except OSError as exc:
        raise ReplicaUnreachable(f"no replica directory: {exc.strerror}") from exc
    try:
        token = _read_small(dir_fd, TOKEN, None).strip()
        run_fd = os.open("run", DIR_FLAGS, dir_fd=dir_fd)
        try:
            text = _read_small(run_fd, ADDRESS, uid).decode("ascii", "replace").strip()
        finally:
            os.close(run_fd)
    except FileNotFoundError as exc:
        raise ReplicaUnreachable("the replica has not said where it listens yet") from exc
    except OSError as exc:
        raise ReplicaUnreachable(f"cannot read the replica's address: {exc}") from exc
    finally:
        os.close(dir_fd)
    host, _, port = text.rpartition(":")
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError as exc:
        raise ReplicaUnreachable(f"the replica's address is not IP:PORT: {text[:80]!r}") \
            from exc
    if not port.isdigit() or not 0 < int(port) < 65536 or not token:
        raise ReplicaUnreachable(f"the replica's address is not IP:PORT: {text[:80]!r}")
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    sock = LinkSocket(family, (str(ip), int(port)), token)
    sock.setblocking(False)
    # The handshake's last line and the first request follow each other: with Nagle,
    # the request would wait for the replica's delayed ACK (40 ms).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _check(sock: LinkSocket, nonce_d: bytes, line: bytes) -> bytes:
    if not line.endswith(b"\n"):
        raise ReplicaUnreachable("the replica's port answered no handshake")
    nonce_r = link.read_answer(sock.token, nonce_d, line)
    if nonce_r is None:
        raise ReplicaUnreachable("the peer on the replica's port did not prove the "
                                 "replica's token (not the replica)")
    return link.finish(sock.token, nonce_r, nonce_d)


async def greet(sock: LinkSocket, timeout: float) -> None:
    """Connect and prove the token both ways, within `timeout` (ReplicaUnreachable)."""
    loop = asyncio.get_running_loop()
    nonce_d = link.nonce()
    try:
        async with asyncio.timeout(timeout):
            await loop.sock_connect(sock, sock.target)
            await loop.sock_sendall(sock, link.hello(nonce_d))
            line = b""
            while not line.endswith(b"\n") and len(line) <= link.MAX_LINE:
                chunk = await loop.sock_recv(sock, link.MAX_LINE + 1 - len(line))
                if not chunk:
                    break
                line += chunk
            await loop.sock_sendall(sock, _check(sock, nonce_d, line))
    except (OSError, TimeoutError) as exc:
        raise ReplicaUnreachable(f"the replica's port: {exc or 'no answer in time'}") from exc
    sock.ready = True


def greet_sync(sock: LinkSocket, timeout: float) -> None:
    """`greet` for a thread of its own (the health probe)."""
    nonce_d = link.nonce()
    try:
        sock.settimeout(timeout)
        sock.connect(sock.target)
        sock.sendall(link.hello(nonce_d))
        line = b""
        while not line.endswith(b"\n") and len(line) <= link.MAX_LINE:
            chunk = sock.recv(link.MAX_LINE + 1 - len(line))
            if not chunk:
                break
            line += chunk
        sock.sendall(_check(sock, nonce_d, line))
    except (OSError, TimeoutError) as exc:
        with contextlib.suppress(OSError):
            sock.close()
        raise ReplicaUnreachable(f"the replica's port: {exc or 'no answer in time'}") from exc
    sock.ready = True

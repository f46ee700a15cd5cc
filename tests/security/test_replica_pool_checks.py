"""The proxy keeps connections to a replica alive between requests (a pool per replica
run); that must not weaken what a new connection guarantees:

- every new connection, the retry after a pooled one went stale included, goes through
  `ReplicaHost.connect`'s checks: a socket the user swapped for one with root behind it
  is refused (SO_PEERCRED), and root's listener is never sent a byte;
- a restarted replica is a new run: `keep` closes the old run's idle connections, and
  the new run is reached on connections of its own;
- a connection on which the replica sent something unasked is never reused.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import UnixUser  # type: ignore[import-not-found]

from nai_server.host.replica_http import ReplicaFailed, ReplicaPool
from nai_server.host.replicas import SOCKET_DIR, SOCKET_NAME, Owner, ReplicaHost, ReplicaUnreachable

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="creates unix users: run as root")

# Keep-alive HTTP: answers "<pid> <connection number>"; /bye closes after answering
# (without saying so, as a keep-alive timeout does); /extra sends a stray byte after.
SERVER = r"""
import os, socket, sys, threading
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1])
s.listen(16)
count = [0]
def serve(c, n):
    buf = b""
    while True:
        while b"\r\n\r\n" not in buf:
            d = c.recv(65536)
            if not d:
                c.close()
                return
            buf += d
        head, _, buf = buf.partition(b"\r\n\r\n")
        body = f"{os.getpid()} {n}".encode()
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        if b" /extra " in head:
            c.sendall(b"X")
        if b" /bye " in head:
            c.close()
            return
print("ready", flush=True)
while True:
    c, _ = s.accept()
    count[0] += 1
    threading.Thread(target=serve, args=(c, count[0]), daemon=True).start()
"""


class Replica:
    """A replica run's directory with the user's keep-alive server on its socket."""

    def __init__(self, root: Path, run: str, user: UnixUser) -> None:
        self.where = root / run
        (self.where / SOCKET_DIR).mkdir(parents=True, mode=0o700)
        os.chmod(self.where, 0o711)
        os.chown(self.where / SOCKET_DIR, user.uid, user.gid)
        self.sock = self.where / SOCKET_DIR / SOCKET_NAME
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SERVER, str(self.sock)], user=user.uid, group=user.gid,
            stdout=subprocess.PIPE)
        assert self.proc.stdout is not None and self.proc.stdout.readline() == b"ready\n"

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


class RootListener:
    """Root behind a socket file chowned to the user: records every byte sent to it."""

    def __init__(self, path: Path, user: UnixUser) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.bind(str(path))
        os.chown(path, user.uid, user.gid)
        self.sock.listen(16)
        self.received = b""
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            conn.settimeout(2)
            try:
                self.received += conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nroot")
            except OSError:
                pass


@pytest.fixture
def setting(make_user) -> Iterator[tuple[Path, UnixUser, Owner, ReplicaHost]]:
    user = make_user()
    root = Path(tempfile.mkdtemp(prefix="nai-pool-", dir="/tmp"))
    os.chmod(root, 0o711)
    host = ReplicaHost(root / "host", None, personal=False)  # type: ignore[arg-type]
    yield root, user, Owner(user.name, user.uid, user.gid), host
    shutil.rmtree(root, ignore_errors=True)


async def get(pool: ReplicaPool, host: ReplicaHost, key: str, replica: Replica,
              owner: Owner, path: str = "/") -> str:
    conn = pool.checkout(key, lambda: host.connect(replica.where, owner))
    answer = await pool.exchange(conn, "GET", path, [], b"", timeout=5)
    return b"".join([chunk async for chunk in answer.body]).decode()


def test_a_stale_pooled_connection_is_replaced_only_through_the_checks(setting) -> None:
    root, user, owner, host = setting
    replica = Replica(root, "1.1", user)
    pool = ReplicaPool()

    async def go() -> None:
        first = await get(pool, host, "1.1", replica, owner)
        again = await get(pool, host, "1.1", replica, owner)
        assert again == first and pool.opened == 1  # kept alive: one connection
        await get(pool, host, "1.1", replica, owner, "/bye")  # pooled, then closed by it
        # The user swaps the socket for one with root behind it.
        os.unlink(replica.sock)
        listener = RootListener(replica.sock, user)
        with pytest.raises((ReplicaUnreachable, ReplicaFailed)):
            await get(pool, host, "1.1", replica, owner)
        assert listener.received == b""

    try:
        asyncio.run(go())
    finally:
        replica.stop()


def test_a_restarted_replica_loses_its_pooled_connections(setting) -> None:
    root, user, owner, host = setting
    old, new = Replica(root, "1.1", user), Replica(root, "1.2", user)
    pool = ReplicaPool()

    async def go() -> None:
        answer = await get(pool, host, "1.1", old, owner)
        assert answer.split()[0] == str(old.proc.pid)
        idle = pool.take("1.1")
        assert idle is not None
        pool.put(idle)
        pool.keep(["1.2"])  # the supervisor published the new run only
        assert idle.sock.fileno() == -1  # closed
        assert pool.take("1.1") is None
        answer = await get(pool, host, "1.2", new, owner)
        assert answer.split()[0] == str(new.proc.pid)

    try:
        asyncio.run(go())
    finally:
        old.stop()
        new.stop()


def test_a_connection_with_unasked_bytes_is_not_reused(setting) -> None:
    root, user, owner, host = setting
    replica = Replica(root, "1.1", user)
    pool = ReplicaPool()

    async def go() -> None:
        first = await get(pool, host, "1.1", replica, owner, "/extra")
        deadline = asyncio.get_running_loop().time() + 5
        while True:  # the stray byte arrives after the answer: poll for it
            conn = pool.take("1.1")
            if conn is None:
                break
            pool.put(conn)
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.01)
        second = await get(pool, host, "1.1", replica, owner)
        assert second.split()[1] != first.split()[1]  # a new connection

    try:
        asyncio.run(go())
    finally:
        replica.stop()

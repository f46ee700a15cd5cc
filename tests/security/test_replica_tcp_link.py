"""The TCP link to a replica on another node (services on Slurm): nai's replica server
listens on every address of its node, so anyone on the cluster can connect to it.

- another user who connects without the run's token gets no HTTP at all: not by
  speaking HTTP straight away, not with a forged proof; and cannot read the token;
- a squatter on the replica's port (its address file is stale: the replica died and
  another user took the port) cannot prove the token, and the daemon sends it nothing
  of the caller's request;
- the address file is read only as a regular file of the replica's user.
Real processes as real unix users; the daemon's side is ReplicaHost and ReplicaPool.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import UnixUser  # type: ignore[import-not-found]

from nai_server.host import replica_link
from nai_server.host.replica_http import ReplicaPool
from nai_server.host.replicas import SOCKET_DIR, Owner, ReplicaHost, ReplicaUnreachable
from nai_server.testing import wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="creates unix users: run as root")

PREDICT = "def load(model_dir):\n    pass\n\ndef predict(inputs):\n    return sum(inputs)\n"
SECRET = b"caller-secret-4711"

# As another user: talk to the replica's port without the token, two ways.
INTRUDER = r"""
import json, socket, sys
port = int(sys.argv[1])
def talk(first, then=None):
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(first)
    got = b""
    try:
        if then is not None:
            got += s.recv(4096)
            s.sendall(then)
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            got += chunk
    except OSError as exc:
        got += b"<" + type(exc).__name__.encode() + b">"
    return got.decode("latin-1")
plain = talk(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
hello = b"NAI-REPLICA/1 " + b"ab" * 32 + b"\r\n"
forged = talk(hello, b"00" * 32 + b"\r\nGET /health HTTP/1.1\r\nHost: x\r\n\r\n")
try:
    open(sys.argv[2]).read()
    token = "read"
except OSError as exc:
    token = type(exc).__name__
print(json.dumps({"plain": plain, "forged": forged, "token": token}))
"""

# As another user: listen on a port, answer the daemon's hello with a made-up proof,
# and report every byte received.
SQUATTER = r"""
import json, socket, sys
s = socket.socket()
s.bind(("127.0.0.1", 0))
s.listen(4)
print(s.getsockname()[1], flush=True)
c, _ = s.accept()
c.settimeout(3)
got = b""
try:
    got += c.recv(4096)
    c.sendall(b"00" * 32 + b" " + b"cd" * 32 + b"\r\n")
    while True:
        chunk = c.recv(4096)
        if not chunk:
            break
        got += chunk
except OSError:
    pass
print(json.dumps(got.decode("latin-1")), flush=True)
"""


@dataclass
class Setting:
    where: Path
    alice: UnixUser
    mallory: UnixUser
    owner: Owner
    host: ReplicaHost


@pytest.fixture
def setting(make_user) -> Iterator[Setting]:
    alice, mallory = make_user(), make_user()
    root = Path(tempfile.mkdtemp(prefix="nai-link-", dir="/tmp"))
    os.chmod(root, 0o711)
    host = ReplicaHost(root / "host", None, personal=False)  # type: ignore[arg-type]
    where = host.path("1.1")
    (where / SOCKET_DIR).mkdir(parents=True, mode=0o700)
    os.chmod(where, 0o711)
    os.chown(where / SOCKET_DIR, alice.uid, alice.gid)
    (where / "model").mkdir(mode=0o755)
    (where / "model" / "predict.py").write_text(PREDICT)
    replica_link.write_token(where, alice.uid, alice.gid)
    yield Setting(where, alice, mallory, Owner(alice.name, alice.uid, alice.gid), host)
    shutil.rmtree(root, ignore_errors=True)


OWN_SERVER = Path(__file__).parent.parent / "integration" / "service_model" / "server.py"


@pytest.fixture(params=["nai", "relay"])
def replica(setting: Setting, request: pytest.FixtureRequest) -> Iterator[int]:
    """On the TCP link, as alice: nai's replica server, or a model's own server on its
    unix socket behind nai's relay; the port."""
    s = setting
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
           "NAI_MODEL_DIR": str(s.where / "model"),
           "NAI_SERVE_TOKEN_FILE": str(s.where / replica_link.TOKEN),
           "NAI_SERVE_ADDRESS_FILE": str(s.where / SOCKET_DIR / replica_link.ADDRESS),
           "NAI_DAEMON_HOST": "127.0.0.1"}
    argv = [sys.executable, "-m", "nai_server.serving.replica"]
    if request.param == "relay":
        shutil.copy(OWN_SERVER, s.where / "model" / "server.py")
        (s.where / "model" / "weights.txt").write_text("w1")
        env["NAI_SERVE_SOCKET"] = str(s.where / SOCKET_DIR / "serve.sock")
        argv = [sys.executable, "-m", "nai_server.serving.relay", "--", sys.executable,
                str(s.where / "model" / "server.py")]
    # A session of its own: the relay's child (the own server) is killed with it.
    proc = subprocess.Popen(argv, env=env, user=s.alice.uid, group=s.alice.gid, cwd="/",
                            start_new_session=True)
    try:
        wait_for(lambda: s.host.probe(s.where, s.owner, "/health", 2)[0], timeout=60,
                 what="the replica to answer over the link")
        address = (s.where / SOCKET_DIR / replica_link.ADDRESS).read_text().strip()
        yield int(address.rpartition(":")[2])
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def invoke(s: Setting) -> bytes:
    """A predict of [1, 2] through the daemon's pool; the answer's body, as nai's server
    (`{"outputs":3}`) or the own server (`{"sum": 3, ...}`) says it."""
    async def go() -> bytes:
        pool = ReplicaPool()
        conn = pool.checkout("1.1", lambda: s.host.connect(s.where, s.owner))
        answer = await pool.exchange(conn, "POST", "/predict", [], b'{"inputs": [1, 2]}',
                                     timeout=5)
        body = b"".join([chunk async for chunk in answer.body])
        pool.close()
        return body
    return asyncio.run(go())


def as_user(user: UnixUser, script: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", script, *args], user=user.uid,
                            group=user.gid, stdout=subprocess.PIPE, text=True, cwd="/")


def test_the_daemon_reaches_the_replica_over_the_link(setting: Setting, replica: int) -> None:
    assert invoke(setting) in (b'{"outputs":3}', b'{"sum": 3, "weights": "w1"}')
    with setting.host.connect(setting.where, setting.owner) as sock:  # no 40 ms stalls
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    token = setting.where / replica_link.TOKEN
    assert token.stat().st_uid == setting.alice.uid and token.stat().st_mode & 0o777 == 0o400


def test_another_user_without_the_token_gets_no_http(setting: Setting, replica: int) -> None:
    proc = as_user(setting.mallory, INTRUDER, str(replica),
                   str(setting.where / replica_link.TOKEN))
    out, _ = proc.communicate(timeout=60)
    seen = json.loads(out)
    assert seen["token"] == "PermissionError"
    assert "HTTP/" not in seen["plain"] and seen["plain"] in ("", "<ConnectionResetError>")
    assert "HTTP/" not in seen["forged"], seen  # an answer line, then nothing
    assert invoke(setting) in (b'{"outputs":3}', b'{"sum": 3, "weights": "w1"}')


def test_a_squatter_on_the_port_is_sent_nothing_of_the_request(setting: Setting) -> None:
    s = setting
    squatter = as_user(s.mallory, SQUATTER)
    assert squatter.stdout is not None
    port = int(squatter.stdout.readline())
    # The replica's last address, left behind (alice's file), now names mallory's port.
    address = s.where / SOCKET_DIR / replica_link.ADDRESS
    address.write_text(f"127.0.0.1:{port}\n")
    os.chown(address, s.alice.uid, s.alice.gid)

    async def go() -> None:
        pool = ReplicaPool()
        conn = pool.checkout("1.1", lambda: s.host.connect(s.where, s.owner))
        await pool.exchange(conn, "POST", "/predict", [], SECRET, timeout=5)

    with pytest.raises(ReplicaUnreachable, match="did not prove"):
        asyncio.run(go())
    got = json.loads(squatter.communicate(timeout=30)[0])
    assert got.startswith("NAI-REPLICA/1 ") and got.count("\n") == 1  # the hello only
    assert SECRET.decode() not in got and "POST" not in got
    assert not s.host.probe(s.where, s.owner, "/health", 2)[0]


def test_the_address_is_read_only_from_a_file_of_the_replicas_user(
        setting: Setting) -> None:
    s = setting
    address = s.where / SOCKET_DIR / replica_link.ADDRESS
    elsewhere = s.where.parent / "elsewhere"
    elsewhere.write_text("127.0.0.1:9\n")
    os.chown(elsewhere, s.alice.uid, s.alice.gid)
    address.symlink_to(elsewhere)
    with pytest.raises(ReplicaUnreachable):
        s.host.connect(s.where, s.owner)
    address.unlink()
    address.write_text("127.0.0.1:9\n")  # another user's: not the replica's
    os.chown(address, s.mallory.uid, s.mallory.gid)
    with pytest.raises(ReplicaUnreachable, match="not a file of the replica's user"):
        s.host.connect(s.where, s.owner)

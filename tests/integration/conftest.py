"""Real parts: unix users created for the test, the real daemon as a subprocess on a
temporary socket, and requests relayed through `nai-server dial-stdio` run as a user."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from nai_server.testing import tree_upload, wait_for
from nai_server.testing.loopback_sshd import (
    SSHD,
    Sshd,
    free_port,
    make_sshd,
    port_accepts,
    ssh_keygen,
)

__all__ = ["SSHD", "Sshd", "free_port", "port_accepts", "ssh_keygen", "wait_for"]

BIN = Path(sys.executable).parent
IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="creates unix users: run as root")


@pytest.fixture(scope="session")
def traversable() -> Iterator[None]:
    """Let other unix users run this venv's Python and read the code.

    A Python under /root (mode 0700) cannot be executed by the users the tests
    create; add the search bit (o+x, not read) to the blocking ancestors for the
    session and put the modes back afterwards.
    """
    changed: list[tuple[Path, int]] = []
    targets = [Path(os.path.realpath(sys.executable)), Path(__file__).resolve(), BIN]
    for target in targets:
        for parent in reversed(target.parents):
            mode = parent.stat().st_mode
            if not mode & stat.S_IXOTH:
                changed.append((parent, mode))
                os.chmod(parent, stat.S_IMODE(mode) | stat.S_IXOTH)
    yield
    for path, mode in reversed(changed):
        os.chmod(path, stat.S_IMODE(mode))


@dataclass
class UnixUser:
    name: str
    uid: int
    gid: int
    home: Path


@pytest.fixture
def make_user(traversable: None) -> Iterator[Callable[[], UnixUser]]:
    """Create real unix users (removed with their files at the end of the test)."""
    if not IS_ROOT:
        pytest.skip("creating unix users needs root")
    made: list[str] = []

    def make() -> UnixUser:
        name = f"nait{secrets.token_hex(3)}"
        home = Path(tempfile.gettempdir()) / f"home-{name}"
        subprocess.run(["useradd", "-m", "-d", str(home), "-s", "/bin/sh", name], check=True)
        # useradd leaves the account locked; sshd (UsePAM no) refuses locked accounts.
        subprocess.run(["usermod", "-p", "*", name], check=True)
        made.append(name)
        import pwd

        entry = pwd.getpwnam(name)
        return UnixUser(name, entry.pw_uid, entry.pw_gid, home)

    yield make
    for name in made:
        subprocess.run(["userdel", "-r", "-f", name], capture_output=True)


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def raw_request(method: str, path: str, body: Any = None,
                headers: dict[str, str] | None = None) -> bytes:
    data = b"" if body is None else json.dumps(body).encode()
    lines = [f"{method} {path} HTTP/1.1", "Host: nai", "Connection: close",
             f"Content-Length: {len(data)}"]
    if body is not None:
        lines.append("Content-Type: application/json")
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + data


def parse_response(raw: bytes) -> Response:
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip()
               for k, v in (line.split(":", 1) for line in header_lines)}
    if headers.get("transfer-encoding") == "chunked":
        body = _dechunk(body)
    return Response(int(status_line.split()[1]), headers, body)


def post_as(daemon: Daemon, user: UnixUser, path: str, body: bytes, kind: str) -> dict:
    """One POST as the real user `user` through the relay (dial-stdio), with a body of
    any kind; its JSON answer, which must be 201."""
    head = (f"POST {path} HTTP/1.1\r\nHost: nai\r\nConnection: close\r\n"
            f"Content-Type: {kind}\r\nContent-Length: {len(body)}\r\n\r\n").encode()
    proc = subprocess.run([str(BIN / "nai-server"), "dial-stdio", "--socket",
                           str(daemon.socket)], input=head + body, capture_output=True,
                          timeout=30, user=user.uid, group=user.gid, extra_groups=[])
    assert proc.returncode == 0, proc.stderr.decode()
    answer = parse_response(proc.stdout)
    assert answer.status == 201, answer.body
    return dict(answer.json())


def upload_as(daemon: Daemon, user: UnixUser, files: dict[str, bytes]) -> str:
    """The files' blobs and tree, sent by `user` (so theirs to use); the tree's id."""
    blobs, manifest = tree_upload(files)
    post_as(daemon, user, "/v1/blobs", blobs, "application/x-tar")
    made = post_as(daemon, user, "/v1/trees", json.dumps(manifest).encode(),
                   "application/json")
    return str(made["id"])


def _dechunk(raw: bytes) -> bytes:
    out = bytearray()
    while raw:
        size_line, _, raw = raw.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out += raw[:size]
        raw = raw[size + 2:]
    return bytes(out)


@dataclass
class Daemon:
    """A `nai-server run` subprocess and ways to talk to it."""

    root: Path
    config_path: Path
    socket: Path
    state: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self, *extra: str) -> None:
        log = open(self.root / "daemon.log", "ab")  # noqa: SIM115 - owned by the process
        # Jobs inherit the daemon's PATH: put this venv first so their `python` has numpy.
        env = {**os.environ, "PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}"}
        self.proc = subprocess.Popen(
            [str(BIN / "nai-server"), "run", "--config", str(self.config_path), *extra],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
        wait_for(self.answers_or_died, what=f"daemon on {self.socket}")
        if self.proc.poll() is not None:
            raise AssertionError(f"daemon exited {self.proc.returncode}:\n{self.log()}")

    def answers_or_died(self) -> bool:
        assert self.proc is not None
        return self.proc.poll() is not None or self.answers()

    def answers(self) -> bool:
        try:
            return self.client().get("/v1/version").status_code == 200
        except httpx.HTTPError:
            return False

    def log(self) -> str:
        return (self.root / "daemon.log").read_text(errors="replace")

    def client(self) -> httpx.Client:
        """A client connected straight to the socket, as this process's user (root)."""
        return httpx.Client(transport=httpx.HTTPTransport(uds=str(self.socket)),
                            base_url="http://nai", timeout=30)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def as_user(self, user: UnixUser | None, method: str, path: str, body: Any = None,
                headers: dict[str, str] | None = None) -> Response:
        """One request relayed by `nai-server dial-stdio` running as `user`."""
        argv = [str(BIN / "nai-server"), "dial-stdio", "--socket", str(self.socket)]
        kwargs: dict[str, Any] = {}
        if user is not None:
            kwargs = {"user": user.uid, "group": user.gid, "extra_groups": []}
        proc = subprocess.run(argv, input=raw_request(method, path, body, headers),
                              capture_output=True, timeout=30, **kwargs)
        assert proc.returncode == 0, proc.stderr.decode()
        return parse_response(proc.stdout)

    def admin(self, *args: str, user: UnixUser | None = None) -> subprocess.CompletedProcess[str]:
        kwargs: dict[str, Any] = {}
        if user is not None:
            kwargs = {"user": user.uid, "group": user.gid, "extra_groups": []}
        return subprocess.run([str(BIN / "nai-admin"), "--socket", str(self.socket), *args],
                              capture_output=True, text=True, timeout=30, **kwargs)


@pytest.fixture
def daemon_factory(traversable: None) -> Iterator[Callable[..., Daemon]]:
    """Daemons on temporary sockets that other unix users can reach."""
    made: list[Daemon] = []

    def make(mode: str = "multi-user", gpus: int = 2, **config: Any) -> Daemon:
        root = Path(tempfile.mkdtemp(prefix="nai-it-"))
        os.chmod(root, 0o755)
        cfg = {"mode": mode, "state_dir": str(root / "state"),
               "socket": str(root / "run" / "nai.sock"),
               "gpus": {"source": "fake", "fake": [{"name": "Fake GPU", "memory": "80GiB"}] * gpus},
               "scheduler": {"tick_seconds": 0.2}}
        for key, value in config.items():
            if isinstance(value, dict) and isinstance(cfg.get(key), dict):
                cfg[key] = {**cfg[key], **value}
            else:
                cfg[key] = value
        (root / "config.yaml").write_text(yaml.safe_dump(cfg))
        daemon = Daemon(root, root / "config.yaml", root / "run" / "nai.sock", root / "state")
        made.append(daemon)
        return daemon

    yield make
    for daemon in made:
        daemon.stop()
        with contextlib.suppress(OSError):
            shutil.rmtree(daemon.root)


@pytest.fixture
def daemon(daemon_factory: Callable[..., Daemon]) -> Daemon:
    """A running multi-user daemon with 2 fake GPUs."""
    d = daemon_factory()
    d.start()
    return d


# --- sshd on loopback (used by the SSH transport and end-to-end tests) ---


@pytest.fixture
def sshd_factory(traversable: None) -> Iterator[Callable[..., Sshd]]:
    """Start sshd instances on loopback; `path` is the PATH of their sessions (by
    default this venv's bin first, so `nai-server` is found)."""
    if not IS_ROOT:
        pytest.skip("sshd for other users needs root")
    if not SSHD.exists() or not shutil.which("ssh-keygen"):
        pytest.skip("needs openssh-server and openssh-client")
    made: list[Sshd] = []

    def make(path: str | None = None, extra_config: str = "") -> Sshd:
        root = Path(tempfile.mkdtemp(prefix="nai-sshd-"))
        server = make_sshd(root, path or f"{BIN}:/usr/local/bin:/usr/bin:/bin", extra_config)
        made.append(server)
        return server

    yield make
    for server in made:
        server.stop()
        with contextlib.suppress(OSError):
            shutil.rmtree(server.root)


@pytest.fixture
def sshd(sshd_factory: Callable[..., Sshd]) -> Sshd:
    """An sshd on 127.0.0.1 whose sessions find this venv's `nai-server` on the PATH."""
    return sshd_factory()

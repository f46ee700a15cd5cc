"""A replica is its user's program and its socket directory is the user's: whatever
the user puts at $NAI_SERVE_SOCKET, the daemon (root) must not talk to anyone else
through it, and must not wait on it longer than its deadlines.

- a symlink to a root-owned socket: never connected to (the socket must be the user's);
- a socket file the user owns behind which a root process listens: refused (the peer
  must be the user's, SO_PEERCRED), so a link swapped in after the check gains nothing;
- a FIFO: not a socket, refused without opening it;
- a server that accepts and never answers: its health probe times out, the other
  services stay ready, and requests to it end in 503 within the wait.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Daemon, UnixUser  # type: ignore[import-not-found]

from nai_server.testing import upload_tree, wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="creates unix users: run as root")

SETTINGS = {"probe_timeout": 1.0, "invoke_wait": 2.0, "probe_seconds": 0.2}
HANG = b"""import os, socket, time
s = socket.socket(socket.AF_UNIX)
s.bind(os.environ["NAI_SERVE_SOCKET"])
s.listen(64)
held = []
while True:
    held.append(s.accept())  # and never a byte back
"""
OK = b"""import os, socket
s = socket.socket(socket.AF_UNIX)
s.bind(os.environ["NAI_SERVE_SOCKET"])
s.listen(64)
while True:
    c, _ = s.accept()
    c.recv(65536)
    c.sendall(b"HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\nConnection: close\\r\\n\\r\\nok")
    c.close()
"""


def serve_model(daemon: Daemon, name: str, command: str, files: dict[str, bytes]) -> None:
    """A model every user may read, set up by root (not under test)."""
    files = {"nai.yaml": f"serve:\n  command: '{command}'\n".encode(), **files}
    with daemon.client() as root:
        tree = upload_tree(root, files)
        made = root.post("/v1/models", json={"name": name, "tree_id": tree, "shared": True})
        assert made.status_code == 201, made.text


def service(daemon: Daemon, name: str) -> dict:
    with daemon.client() as root:
        return dict(root.get(f"/v1/services/{name}").json())


class RootListener:
    """A root-owned socket that counts who connects and answers 200 to anything."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.accepted = 0
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.bind(str(path))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.done = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.done:
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted += 1
            with contextlib.suppress(OSError), conn:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nroot")

    def close(self) -> None:
        self.done = True
        self.sock.close()


@pytest.fixture
def setting(daemon_factory, make_user) -> Iterator[tuple[Daemon, UnixUser]]:
    daemon = daemon_factory(services=SETTINGS)
    daemon.start()
    user = make_user()
    with daemon.client() as root:
        assert root.post("/v1/users", json={"name": user.name}).status_code == 201
    yield daemon, user
    with contextlib.suppress(Exception), daemon.client() as root:
        for svc in root.get("/v1/services").json()["services"]:
            root.delete(f"/v1/services/{svc['name']}")
    def gone() -> bool:
        return not any(os.stat(f"/proc/{p}").st_uid == user.uid
                       for p in os.listdir("/proc") if p.isdigit()
                       and os.path.exists(f"/proc/{p}"))
    with contextlib.suppress(AssertionError, OSError):
        wait_for(gone, timeout=15, what="replicas to stop")


def create(daemon: Daemon, user: UnixUser, name: str) -> None:
    made = daemon.as_user(user, "POST", "/v1/services", {"name": name, "model": name})
    assert made.status == 201, made.body


def test_a_symlink_to_a_root_socket_is_never_followed(setting, tmp_path: Path) -> None:
    daemon, user = setting
    os.chmod(tmp_path, 0o755)
    listener = RootListener(tmp_path / "root.sock")
    try:
        serve_model(daemon, "linked", f'ln -s {listener.path} "$NAI_SERVE_SOCKET"; '
                    f"exec sleep 600", {})
        create(daemon, user, "linked")
        wait_for(lambda: "not a socket of" in str(
            (service(daemon, "linked")["replica_info"] or [{}])[0].get("message")),
            what="the daemon to refuse the link")
        answer = daemon.as_user(user, "GET", "/v1/services/linked/invoke/health")
        assert answer.status == 503, answer.body
        assert service(daemon, "linked")["state"] == "starting"
        assert listener.accepted == 0  # root's socket never heard from the daemon
    finally:
        listener.close()


def test_a_socket_file_of_the_user_with_root_behind_it_is_refused(setting) -> None:
    daemon, user = setting
    serve_model(daemon, "swapped", "exec sleep 600", {})
    create(daemon, user, "swapped")
    # Not `.NAME.new/run`: a replica's directory is built under that name and renamed.
    runs = wait_for(lambda: [run for run in (daemon.state / "services").glob("*/run")
                             if not run.parent.name.startswith(".")],
                    what="the replica's directory")
    path = runs[0] / "serve.sock"
    listener = RootListener(path)  # root listens, and the file is made the user's
    os.chown(path, user.uid, user.gid, follow_symlinks=False)
    try:
        wait_for(lambda: "is not" in str(service(daemon, "swapped")["replica_info"][0]
                                         .get("message")) and "uid 0" in str(
            service(daemon, "swapped")["replica_info"][0].get("message")),
            what="the daemon to refuse root's process behind the user's socket")
        assert service(daemon, "swapped")["state"] == "starting"
        assert daemon.as_user(user, "GET", "/v1/services/swapped/invoke/x").status == 503
    finally:
        listener.close()


def test_a_fifo_and_a_silent_server_never_hold_the_daemon(setting) -> None:
    daemon, user = setting
    serve_model(daemon, "fifo", 'mkfifo "$NAI_SERVE_SOCKET"; exec sleep 600', {})
    serve_model(daemon, "silent", "exec python hang.py", {"hang.py": HANG})
    serve_model(daemon, "fine", "exec python ok.py", {"ok.py": OK})
    for name in ("fifo", "silent", "fine"):
        create(daemon, user, name)
    wait_for(lambda: service(daemon, "fine")["state"] == "ready",
             what="the good service to be ready beside the hostile ones")
    wait_for(lambda: "within" in str(service(daemon, "silent")["replica_info"][0]["message"]),
             what="the silent server's probe to time out")
    wait_for(lambda: "not a socket" in str(service(daemon, "fifo")["replica_info"][0]
                                           ["message"]), what="the FIFO to be refused")
    for name in ("fifo", "silent"):
        assert service(daemon, name)["state"] == "starting"
        started = time.monotonic()
        answer = daemon.as_user(user, "GET", f"/v1/services/{name}/invoke/health")
        assert answer.status == 503, answer.body
        assert time.monotonic() - started < 20
    assert daemon.as_user(user, "GET", "/v1/services/fine/invoke/x").body == b"ok"

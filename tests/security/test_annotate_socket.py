"""An annotate job's socket is in a folder its user owns (`code/annotate.sock`):
whatever the user puts there, the daemon (root) must not talk to anyone else through
it, nor wait on it.

- a symlink to a root-owned socket: never connected to (the socket must be the user's);
- a socket file the user owns with a root process behind it: refused (SO_PEERCRED);
- a FIFO: not a socket, refused without opening it; the daemon answers on.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import socket
import subprocess
import sys
import tarfile
import tempfile
import threading
from pathlib import Path

import pytest
from conftest import Daemon, UnixUser  # type: ignore[import-not-found]

from nai_server.core.processing import APP_DIR, APP_SOCKET
from nai_server.testing import wait_for
from nai_server.testing.plugin_dist import write_dist

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="creates unix users: run as root")

DATA = {"a.txt": b"a cat\n"}


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


def shared_dataset(daemon: Daemon) -> None:
    """A dataset every user may read, set up by root (not under test)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.USTAR_FORMAT) as tar:
        for data in DATA.values():
            info = tarfile.TarInfo(hashlib.sha256(data).hexdigest())
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with daemon.client() as root:
        assert root.post("/v1/blobs", content=out.getvalue()).status_code == 201
        tree = root.post("/v1/trees", json={"entries": [
            {"path": p, "size": len(d), "sha256": hashlib.sha256(d).hexdigest()}
            for p, d in DATA.items()]}).json()["id"]
        made = root.post("/v1/datasets", json={"name": "texts", "tree_id": tree,
                                               "shared": True})
        assert made.status_code == 201, made.text


def as_user(user: UnixUser, code: str) -> None:
    """Run Python as `user` (what their own job could do)."""
    subprocess.run([sys.executable, "-c", code], user=user.uid, group=user.gid,
                   extra_groups=[], check=True, timeout=30)


@pytest.fixture
def session(daemon_factory, make_user, request: pytest.FixtureRequest,
            monkeypatch: pytest.MonkeyPatch) -> tuple[Daemon, UnixUser, int, Path]:
    site = write_dist(Path(tempfile.mkdtemp(prefix="nai-site-")), "nai-labels", "1.0", {},
                      {"nai.annotators": {"labels": "nai_plugins.labels"}})
    request.addfinalizer(lambda: shutil.rmtree(site, ignore_errors=True))
    monkeypatch.setenv("PYTHONPATH", f"{site}:{os.environ.get('PYTHONPATH', '')}")
    daemon: Daemon = daemon_factory(plugins={"labels": {}})
    daemon.start()
    user = make_user()
    assert daemon.admin("user", "add", user.name).returncode == 0
    shared_dataset(daemon)
    made = daemon.as_user(user, "POST", "/v1/datasets/texts/annotate",
                          {"plugin": "labels", "to": "mine", "options": {"classes": "a,b"}})
    assert made.status == 201, made.body
    job_id = int(made.json()["id"])
    app = f"/v1/jobs/{job_id}/app/items"
    wait_for(lambda: daemon.as_user(user, "GET", app).status == 200, timeout=60,
             what="the annotator's app")
    yield daemon, user, job_id, daemon.state / "jobs" / str(job_id) / APP_DIR / APP_SOCKET
    daemon.as_user(user, "DELETE", f"/v1/jobs/{job_id}")


def test_a_symlink_to_a_root_socket_is_never_followed(session, tmp_path: Path) -> None:
    daemon, user, job_id, sock = session
    os.chmod(tmp_path, 0o755)
    listener = RootListener(tmp_path / "root.sock")
    try:
        as_user(user, f"import os; os.unlink({str(sock)!r}); "
                      f"os.symlink({str(listener.path)!r}, {str(sock)!r})")
        answer = daemon.as_user(user, "GET", f"/v1/jobs/{job_id}/app/items")
        assert answer.status == 503, answer.body
        assert b"not a socket of" in answer.body
        assert listener.accepted == 0  # root's socket never heard from the daemon
    finally:
        listener.close()


def test_a_socket_of_the_user_with_root_behind_it_is_refused(session) -> None:
    daemon, user, job_id, sock = session
    as_user(user, f"import os; os.unlink({str(sock)!r})")
    listener = RootListener(sock)  # root listens, and the file is made the user's
    os.chown(sock, user.uid, user.gid, follow_symlinks=False)
    try:
        answer = daemon.as_user(user, "GET", f"/v1/jobs/{job_id}/app/items")
        assert answer.status == 503, answer.body
        assert b"not the job's user's" in answer.body
    finally:
        listener.close()


def test_a_fifo_never_holds_the_daemon(session) -> None:
    daemon, user, job_id, sock = session
    as_user(user, f"import os; os.unlink({str(sock)!r}); os.mkfifo({str(sock)!r}, 0o666)")
    answer = daemon.as_user(user, "GET", f"/v1/jobs/{job_id}/app/items")  # 30 s at most
    assert answer.status == 503, answer.body
    assert b"not a socket of" in answer.body
    assert daemon.as_user(user, "GET", "/v1/version").status == 200

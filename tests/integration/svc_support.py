"""What the services tests share: a model whose `serve:` command is a tiny stdlib
server (service_model/server.py), registered by a real user; waiting for states; and
stopping every replica a test started, whatever happened to the daemon."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Daemon, UnixUser, wait_for  # type: ignore[import-not-found]
from test_registry_access import Actor, upload_tree  # type: ignore[import-not-found]

SERVER = (Path(__file__).parent / "service_model" / "server.py").read_bytes()
SERVE_YAML = b"serve:\n  command: python server.py\n  health: /health\n"


def model_files(weights: str = "w1", serve: bytes = SERVE_YAML) -> dict[str, bytes]:
    return {"nai.yaml": serve, "server.py": SERVER, "weights.txt": weights.encode()}


def register_user(daemon: Daemon, user: UnixUser) -> None:
    with daemon.client() as root:
        assert root.post("/v1/users", json={"name": user.name}).status_code == 201


def register_model(daemon: Daemon, user: UnixUser, name: str, weights: str = "w1",
                   serve: bytes = SERVE_YAML, **extra: Any) -> None:
    """Model `name` (or its next version) pushed by `user`."""
    actor = Actor(daemon, user)
    try:
        tree = upload_tree(daemon, model_files(weights, serve), actor)
        made = actor("POST", "/v1/models", {"name": name, "tree_id": tree, **extra})
        if made.status == 409:
            made = actor("POST", f"/v1/models/{name}/versions", {"tree_id": tree})
        assert made.status == 201, made.body
    finally:
        actor.http.close()


def info(daemon: Daemon, name: str) -> dict[str, Any]:
    with daemon.client() as root:
        got = root.get(f"/v1/services/{name}")
        assert got.status_code == 200, got.text
        return dict(got.json())


def wait_state(daemon: Daemon, name: str, state: str, timeout: float = 60) -> dict[str, Any]:
    def reached() -> dict[str, Any] | None:
        found = info(daemon, name)
        return found if found["state"] == state else None

    try:
        return dict(wait_for(reached, timeout=timeout, what=f"service {name} {state}"))
    except AssertionError:
        print(daemon.log()[-5000:])
        raise


def user_pids(uids: set[int]) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if os.stat(f"/proc/{entry}").st_uid in uids:
                    found.append(int(entry))
    return found


@pytest.fixture
def reaper() -> Iterator[list[tuple[Daemon, UnixUser]]]:
    """Register (daemon, user) pairs: at the end, the daemon stops every service it has,
    and whatever those users still run is killed (replicas outlive the daemon)."""
    tracked: list[tuple[Daemon, UnixUser]] = []
    yield tracked
    for daemon in {id(d): d for d, _ in tracked}.values():
        if daemon.proc is not None and daemon.proc.poll() is None:
            with contextlib.suppress(Exception), daemon.client() as root:
                for svc in root.get("/v1/services").json()["services"]:
                    root.delete(f"/v1/services/{svc['name']}")
    uids = {u.uid for _, u in tracked}
    with contextlib.suppress(AssertionError):
        wait_for(lambda: not user_pids(uids), timeout=15, what="replicas to stop")
    for pid in user_pids(uids):  # processes of the test's own users, by pid
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)

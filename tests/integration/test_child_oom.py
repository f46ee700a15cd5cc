"""A job whose main process exits 0 after the OOM killer took one of its children did
not do its work: through the real daemon (root) as a real unix user, it ends `failed`
with exit code 0 and says that a process was killed for lack of memory."""

from __future__ import annotations

import os
from typing import Any

import pytest
from conftest import Daemon  # type: ignore[import-not-found]

from nai_server.host import cgroup_limits, contain
from nai_server.protocol import TERMINAL_STATES
from nai_server.testing import wait_for

LAYOUT = contain.detect()

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or "memory" not in cgroup_limits.survey(LAYOUT.kind, LAYOUT.root),
    reason="memory limits need a cgroup memory controller and a root daemon")

HOG = "python3 -c 'k=[]\nfor _ in range(512): k.append(bytearray(1 << 20))\nprint(\"survived\")'"


def run(daemon: Daemon, user: Any, command: str) -> dict[str, Any]:
    made = daemon.as_user(user, "POST", "/v1/jobs",
                          {"spec": {"command": command, "gpus": 0, "memory": "64MiB"}})
    assert made.status == 201, made.json()
    job = made.json()["id"]

    def done() -> dict[str, Any] | None:
        info = daemon.as_user(user, "GET", f"/v1/jobs/{job}").json()
        return info if info["state"] in TERMINAL_STATES else None

    return wait_for(done, timeout=60, what=f"job {job} to end")


def test_a_child_killed_out_of_memory_fails_a_job_that_exits_0(
        daemon: Daemon, make_user: Any) -> None:
    alice = make_user()
    assert daemon.admin("user", "add", alice.name).returncode == 0
    info = run(daemon, alice, f"{HOG} || echo the child died; exit 0")
    assert info["state"] == "failed" and info["exit_code"] == 0, info
    assert info["message"] == ("exit code 0, but the kernel killed one of its processes "
                               "for lack of memory; killed: out of memory (limit 64.0 MiB)")
    # Within its limit, the same job succeeds, with nothing to say.
    quiet = run(daemon, alice, "python3 -c 'k = bytearray(8 << 20)'; exit 0")
    assert quiet["state"] == "succeeded" and quiet["message"] is None, quiet

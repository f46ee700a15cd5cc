"""A job cannot outlive itself: through the real daemon (root) as real unix users,
whatever a job leaves running, in its session or out of it, is killed with it, the
job cannot leave its cgroup, and another user's job is not touched."""

from __future__ import annotations

import os
from typing import Any

import pytest
from conftest import Daemon, UnixUser  # type: ignore[import-not-found]

from nai_server.host import contain
from nai_server.host.launchers.local import proc_start_ticks, proc_uid
from nai_server.protocol import TERMINAL_STATES
from nai_server.testing import wait_for

TERMINAL = TERMINAL_STATES
LAYOUT = contain.detect()

pytestmark = pytest.mark.skipif(
    LAYOUT.root is None or os.geteuid() != 0,
    reason="a cgroup per job needs a cgroup2 hierarchy and a root daemon")


def registered(daemon: Daemon, make_user: Any, count: int) -> list[UnixUser]:
    users = [make_user() for _ in range(count)]
    for u in users:
        assert daemon.admin("user", "add", u.name).returncode == 0
    return users


def submit(daemon: Daemon, user: UnixUser, command: str) -> int:
    made = daemon.as_user(user, "POST", "/v1/jobs", {"spec": {"command": command, "gpus": 0}})
    assert made.status == 201, made.json()
    return int(made.json()["id"])


def job_info(daemon: Daemon, user: UnixUser, job_id: int) -> dict[str, Any]:
    return daemon.as_user(user, "GET", f"/v1/jobs/{job_id}").json()


def ended(daemon: Daemon, user: UnixUser, job_id: int) -> dict[str, Any]:
    def look() -> dict[str, Any] | None:
        info = job_info(daemon, user, job_id)
        return info if info["state"] in TERMINAL else None
    return wait_for(look, what=f"job {job_id} to end")


def pids_of(daemon: Daemon, job_id: int, count: int) -> list[int]:
    path = daemon.state / "jobs" / str(job_id) / "output" / "pids"

    def look() -> list[int] | None:
        words = path.read_text().split() if path.exists() else []
        return [int(w) for w in words] if len(words) == count else None
    return wait_for(look, what=f"job {job_id}'s {count} pids")


def alive(pid: int) -> bool:
    return proc_start_ticks(pid) is not None


# A background child, and a grandchild in a session of its own that ignores SIGTERM;
# then an attempt to leave the job's cgroup for the root one.
LEAVE = (
    'P="$NAI_OUTPUT_DIR/pids"; '
    'sleep 300 & echo $! >> "$P"; '
    "setsid sh -c 'trap \"\" TERM; echo $$ >> \"$1\"; exec sleep 300' sh \"$P\" & "
    f"if echo $$ > {LAYOUT.root}/cgroup.procs; then echo escaped; else echo stayed; fi; "
)


def test_what_a_job_leaves_running_is_killed_and_reported(
        daemon: Daemon, make_user: Any) -> None:
    alice, bob = registered(daemon, make_user, 2)
    gate = daemon.root / "bob-gate"
    bobs = submit(daemon, bob, f"while [ ! -e {gate} ]; do sleep 0.05; done")
    try:
        job = submit(daemon, alice, LEAVE + 'while [ "$(wc -l < "$P")" -lt 2 ]; '
                                            "do sleep 0.01; done; exit 0")
        info = ended(daemon, alice, job)
        left = pids_of(daemon, job, 2)
        assert info["state"] == "succeeded" and info["exit_code"] == 0
        assert info["message"] == "2 leftover processes of the job were killed"
        for pid in left:
            wait_for(lambda p=pid: not alive(p), what=f"alice's leftover {pid} to go")
        log = daemon.as_user(alice, "GET", f"/v1/jobs/{job}/logs").body.decode()
        assert "stayed" in log and "escaped" not in log
        # Bob's job, running all along as another user, is untouched.
        assert job_info(daemon, bob, bobs)["state"] == "running"
    finally:
        gate.touch()
    assert ended(daemon, bob, bobs)["state"] == "succeeded"


def test_cancel_kills_what_left_the_jobs_session(daemon: Daemon, make_user: Any) -> None:
    (alice,) = registered(daemon, make_user, 1)
    job = submit(daemon, alice, LEAVE + "while :; do sleep 0.05; done")
    left = pids_of(daemon, job, 2)
    assert all(proc_uid(p) == alice.uid for p in left if alive(p))
    assert daemon.as_user(alice, "DELETE", f"/v1/jobs/{job}").status == 200
    assert ended(daemon, alice, job)["state"] == "cancelled"
    for pid in left:
        wait_for(lambda p=pid: not alive(p), what=f"process {pid} of the cancelled job to go")

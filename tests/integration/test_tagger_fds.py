"""The daemon keeps no descriptor of a job once it has ended: a forked stderr tagger is
held by a pidfd, closed when the tagger is done (it was kept for the daemon's life, one
per job, until the daemon ran out of descriptors)."""

from __future__ import annotations

import os

from nai_server.testing import wait_for
from tests.integration.conftest import Daemon


def pidfds(pid: int) -> int:
    count = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            count += os.readlink(f"/proc/{pid}/fd/{fd}") == "anon_inode:[pidfd]"
        except OSError:
            continue
    return count


def test_ended_jobs_leave_no_pidfd_behind(daemon: Daemon, make_user) -> None:
    alice = make_user()
    assert daemon.admin("user", "add", alice.name).returncode == 0
    assert daemon.proc is not None
    for _ in range(6):
        made = daemon.as_user(alice, "POST", "/v1/jobs", {"spec": {
            "command": "echo to stderr >&2", "gpus": 0}})
        assert made.status == 201, made.body
        job = made.json()["id"]
        wait_for(lambda j=job: daemon.as_user(alice, "GET", f"/v1/jobs/{j}").json()["state"]
                 == "succeeded", timeout=60, what=f"job {job}")
    assert pidfds(daemon.proc.pid) <= 2, daemon.log()[-2000:]

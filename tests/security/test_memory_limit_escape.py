"""A job cannot get out of its memory limit: through the real daemon (root) as a real
unix user, a job that tries to move itself to a cgroup without a limit, or to raise its
own cgroup's limit, is still ended by the OOM killer at its limit, and says so."""

from __future__ import annotations

import os
from typing import Any

import pytest
from conftest import Daemon  # type: ignore[import-not-found]

from nai_server.host import cgroup_limits, contain
from nai_server.testing import wait_for

LAYOUT = contain.detect()
SUPPORT = cgroup_limits.survey(LAYOUT.kind, LAYOUT.root)

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or "memory" not in SUPPORT,
    reason="memory limits need a cgroup memory controller and a root daemon")

V2 = LAYOUT.root
V1 = LAYOUT.root.parent / "memory" if LAYOUT.root is not None else None
# Every way out a job's user might try: into the root (or the daemon's) cgroup of
# either hierarchy, or a higher limit on its own cgroup, v1's and v2's.
ESCAPE = (
    f"for f in {V1}/cgroup.procs {V1}/nai/cgroup.procs {V2}/cgroup.procs "
    f"{V2}/nai/cgroup.procs; do echo $$ 2>/dev/null > $f && echo escaped $f; done; "
    "v1=$(grep ':memory:' /proc/self/cgroup | cut -d: -f3); "
    f'echo -1 2>/dev/null > "{V1}$v1/memory.limit_in_bytes" && echo raised v1; '
    "v2=$(grep '^0::' /proc/self/cgroup | cut -d: -f3); "
    f'echo max 2>/dev/null > "{V2}$v2/memory.max" && echo raised v2; '
    "python3 -c 'k=[]\nfor _ in range(512): k.append(bytearray(1 << 20))\n"
    "print(\"survived\")'"
)


def test_a_job_cannot_leave_or_raise_its_memory_limit(daemon: Daemon, make_user: Any) -> None:
    mallory = make_user()
    assert daemon.admin("user", "add", mallory.name).returncode == 0
    made = daemon.as_user(mallory, "POST", "/v1/jobs",
                          {"spec": {"command": ESCAPE, "gpus": 0, "memory": "64MiB"}})
    assert made.status == 201, made.json()
    job = made.json()["id"]

    def done() -> dict[str, Any] | None:
        info = daemon.as_user(mallory, "GET", f"/v1/jobs/{job}").json()
        return info if info["state"] not in ("queued", "starting", "running") else None

    info = wait_for(done, timeout=60, what="the job to end")
    log = daemon.as_user(mallory, "GET", f"/v1/jobs/{job}/logs").body.decode()
    assert "escaped" not in log and "raised" not in log and "survived" not in log, log
    assert info["state"] == "failed" and info["exit_code"] == 137
    assert info["message"] == "exit code 137; killed: out of memory (limit 64.0 MiB)"

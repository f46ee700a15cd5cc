"""A replica's cgroup is emptied on kernels without `cgroup.kill` (before 5.14): its
processes are SIGKILLed one by one, the same loop a job's cgroup gets (contain.kill_cgroup).
The cgroup here is a plain directory, which has no `cgroup.kill` either."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from nai_server.host import contain
from nai_server.host.cgroup_limits import Limits
from nai_server.host.replicas import CGROUP_PREFIX, ReplicaHost


def _strays(cgroup: Path, count: int) -> list[subprocess.Popen[bytes]]:
    """Processes a replica left outside its session, listed in its (fake) cgroup."""
    procs = [subprocess.Popen(["sleep", "600"]) for _ in range(count)]
    cgroup.mkdir(parents=True)
    (cgroup / "cgroup.procs").write_text("".join(f"{p.pid}\n" for p in procs))
    return procs


def _killed(procs: list[subprocess.Popen[bytes]]) -> list[int | None]:
    try:
        return [p.wait(timeout=30) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def test_kill_cgroup_without_cgroup_kill_signals_each_process(tmp_path: Path) -> None:
    procs = _strays(tmp_path / "job-1", 2)
    assert sorted(contain.kill_cgroup(tmp_path / "job-1")) == sorted(p.pid for p in procs)
    assert _killed(procs) == [-signal.SIGKILL] * 2


def test_a_replicas_cgroup_is_emptied_without_cgroup_kill(tmp_path: Path) -> None:
    box: Any = SimpleNamespace(base=tmp_path / "cgroups", limits=Limits())
    blobs: Any = None  # removing cgroups reads no blobs
    host = ReplicaHost(tmp_path / "replicas", blobs, personal=True, contain=box)
    procs = _strays(box.base / f"{CGROUP_PREFIX}gone-1", 2)
    host.sweep_cgroups(kept=set())
    assert _killed(procs) == [-signal.SIGKILL] * 2

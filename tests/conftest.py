"""Fixtures shared by every test layer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from nai_server.api import create_app
from nai_server.app.use_cases import UseCases
from nai_server.testing import AsPeer, end_jobs, make_service


@pytest.fixture
def service(tmp_path: Path) -> Iterator[UseCases]:
    svc = make_service(tmp_path / "state")
    yield svc
    end_jobs(svc.runtime)
    svc.close()


@pytest.fixture
def api(service: UseCases) -> Iterator[TestClient]:
    """The API in process, called by this process's own user (the personal owner)."""
    with TestClient(AsPeer(create_app(service)), base_url="http://nai") as client:
        yield client


@pytest.fixture
def own_session() -> Iterator[tuple[int, int]]:
    """A session of its own, as a job's wrapper leads one: (leader pid, pid of a process
    inside it). The test process's own session will not do: where tests run in a pid
    namespace its leader may be outside, and `os.getsid(0)` is then 0."""
    import subprocess
    import sys

    leader = subprocess.Popen(
        [sys.executable, "-c", "import subprocess; p = subprocess.Popen(['sleep', '60']);"
         " print(p.pid, flush=True); p.wait()"],
        start_new_session=True, stdout=subprocess.PIPE, text=True)
    assert leader.stdout is not None
    member = int(leader.stdout.readline())
    yield leader.pid, member
    import os
    import signal

    os.killpg(leader.pid, signal.SIGKILL)
    leader.wait()


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[object]:
    """Small file systems of their own, `tmpfs("8m")` (as root; the test is skipped
    where none can be mounted), unmounted at the end."""
    import subprocess

    mounted: list[Path] = []

    def mount(size: str) -> Path:
        disk = tmp_path / f"disk{len(mounted)}"
        disk.mkdir()
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(disk)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.strip()}")
        mounted.append(disk)
        return disk

    yield mount
    for disk in mounted:
        subprocess.run(["umount", "-l", str(disk)], check=True)

"""A job's wrapper runs the job only inside the job's cgroup: it reads its own cgroup
(/proc/self/cgroup) after the daemon's "go", and refuses to start the job anywhere
else, whatever the daemon's write to cgroup.procs did. As a real unix user: in a
real cgroup the job runs; given a folder that is not a cgroup (the write lands in a
plain file, and the wrapper stays where it was), it does not."""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import UnixUser  # type: ignore[import-not-found]

from nai_server.host import contain
from nai_server.host.launchers.local import LaunchRequest, LocalLauncher, read_exit_status
from nai_server.testing import wait_for

LAYOUT = contain.detect()
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="runs jobs as unix users: as root")


@pytest.fixture
def job_dir() -> Iterator[Path]:
    where = Path(tempfile.mkdtemp(prefix="nai-wrapper-"))
    os.chmod(where, 0o711)
    yield where
    shutil.rmtree(where, ignore_errors=True)


def run(job_dir: Path, user: UnixUser, cgroup: Path) -> tuple[int | None, str]:
    code = job_dir / "code"
    code.mkdir(exist_ok=True)
    os.chown(code, user.uid, user.gid)
    launcher = LocalLauncher()
    handle = launcher.start(LaunchRequest(
        job_id=1, job_dir=job_dir, command="touch ran", env={"PATH": "/usr/bin:/bin"},
        cwd=code, uid=user.uid, gid=user.gid, cgroup=cgroup))
    wait_for(lambda: launcher.status(job_dir, handle)[0] != "running", what="the job's end")
    return read_exit_status(job_dir), (job_dir / "log").read_text()


def test_a_job_runs_only_inside_its_cgroup(job_dir: Path, make_user: Any) -> None:
    alice = make_user()
    fake = job_dir / "not-a-cgroup"
    fake.mkdir()
    (fake / "cgroup.procs").touch()
    code, log = run(job_dir, alice, fake)
    assert not (job_dir / "code" / "ran").exists()
    assert code == 125 and "not in the job's cgroup" in log


@pytest.mark.skipif(LAYOUT.root is None, reason="needs a cgroup2 hierarchy")
def test_a_job_in_its_cgroup_runs(job_dir: Path, make_user: Any) -> None:
    alice = make_user()
    assert LAYOUT.root is not None
    cgroup = LAYOUT.root / f"nai-test-{secrets.token_hex(4)}"
    cgroup.mkdir()
    try:
        code, log = run(job_dir, alice, cgroup)
        assert (job_dir / "code" / "ran").exists(), log
        assert code == 0
    finally:
        wait_for(lambda: not (cgroup / "cgroup.procs").read_text().strip(),
                 what="the cgroup to empty")
        cgroup.rmdir()

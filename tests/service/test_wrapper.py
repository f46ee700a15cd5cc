"""The job wrapper's protocol with the daemon: it starts the job only on the daemon's
"go", never starts it once stopped, and always has room for the job's exit status."""

from __future__ import annotations

import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from nai_server.host.launchers.local import (
    STATUS_FILE,
    WRAPPER,
    LaunchRequest,
    LocalLauncher,
    read_exit_status,
)
from nai_server.testing import wait_for


def test_a_signal_before_go_stops_the_job_before_it_starts(tmp_path: Path) -> None:
    status = tmp_path / STATUS_FILE
    ran = tmp_path / "ran"
    go_read, go_write = os.pipe()
    with open(status, "wb") as out:
        wrapper = subprocess.Popen(["/bin/sh", "-c", WRAPPER, "nai-job", f"touch {ran}"],
                                   stdin=go_read, stderr=out, start_new_session=True)
    os.close(go_read)
    wait_for(lambda: status.read_bytes().startswith(b"pid "), what="the wrapper's pid")
    os.killpg(wrapper.pid, signal.SIGTERM)  # a cancel in the same moment as the launch
    try:
        os.write(go_write, b"go\n")
    except BrokenPipeError:
        pass  # it was already gone
    os.close(go_write)
    assert wrapper.wait(timeout=20) == 143
    assert read_exit_status(tmp_path) == 143 and not ran.exists()


@pytest.fixture
def full_disk(tmpfs: Callable[[str], Path]) -> Path:
    """A 1 MiB filesystem, filled up."""
    disk = tmpfs("1m")
    (disk / "code").mkdir()
    with open(disk / "filler", "wb") as filler:
        try:
            filler.write(bytes(2 << 20))
            filler.flush()
        except OSError:
            pass
    return disk


def test_no_job_runs_without_room_for_its_exit_status(full_disk: Path) -> None:
    launcher = LocalLauncher()
    request = LaunchRequest(job_id=1, job_dir=full_disk, command="exit 7",
                            env={"PATH": os.environ["PATH"]}, cwd=full_disk / "code")
    try:
        handle = launcher.start(request)
    except OSError:
        return  # refused to start: the daemon records why
    wait_for(lambda: launcher.status(full_disk, handle)[0] != "running", what="the job to end")
    (full_disk / "filler").unlink()  # even with room now, the status must have been kept
    assert read_exit_status(full_disk) == 7

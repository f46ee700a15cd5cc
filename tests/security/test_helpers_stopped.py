"""The helpers the daemon starts as a job's owner (through setpriv) are the owner's to
stop: SIGSTOP from any process of theirs holds one for as long as they like. Through
the real daemon, as real users, alice stops each of them the moment it starts: the
reader of her job's TensorBoard event files (host.tb_read), the reader of her job's
outputs started when the fork server cannot fork one (outputs._start), and the helper
that empties a folder of hers the daemon removes (user_folders.empty). Meanwhile the
daemon answers bob, and the helper is killed at its deadline.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Daemon, UnixUser  # type: ignore[import-not-found]
from test_jobdir_removal_as_owner import (  # type: ignore[import-not-found]
    DIE_AT_GO,
    ended,
    info,
    submit,
)

from nai_server.host.launchers.local import STATUS_FILE
from nai_server.testing import wait_for

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="creates unix users: run as root")

# Run as alice: SIGSTOP the first process of hers started after it with an argument
# ending in argv[1] (a process left by an earlier test whose user had the same uid is
# not hers).
STOPPER = """\
import os, signal, sys, time
def started(pid):
    with open("/proc/%s/stat" % pid) as f:
        return int(f.read().rsplit(")", 1)[1].split()[19])
mark, me, uid = sys.argv[1].encode(), os.getpid(), os.getuid()
born = started(me)
deadline = time.monotonic() + float(sys.argv[2])
while time.monotonic() < deadline:
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            if os.stat("/proc/" + name).st_uid != uid or started(name) < born:
                continue
            with open("/proc/" + name + "/cmdline", "rb") as f:
                if not any(arg.endswith(mark) for arg in f.read().split(b"\\0")):
                    continue
            os.kill(int(name), signal.SIGSTOP)
        except OSError:
            continue
        print(name, flush=True)
        sys.exit(0)
sys.exit(1)
"""

# Imported by the daemon's Python at its start: the output fork server never forks a
# reader, so every collection starts a helper of its own (outputs._start).
NO_FORKS = """\
import os
if os.environ.get("NAI_TEST_NO_FORKS"):
    from nai_server.host import output_helpers

    def _refuse(*args, **kwargs):
        raise OSError("no output fork server (test)")

    output_helpers.ForkServer.spawn = _refuse
"""


@pytest.fixture
def hook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder first on the daemon's PYTHONPATH, for a sitecustomize.py."""
    folder = tmp_path / "hook"
    folder.mkdir()
    monkeypatch.setenv("PYTHONPATH", f"{folder}:{os.environ.get('PYTHONPATH', '')}")
    return folder


@pytest.fixture
def stoppers() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait()


def stop_first(user: UnixUser, mark: str, stoppers: list[subprocess.Popen[bytes]]
               ) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", STOPPER, mark, "120"],
                            user=user.uid, group=user.gid, extra_groups=[],
                            stdout=subprocess.PIPE, cwd="/")
    stoppers.append(proc)
    return proc


def stopped_pid(proc: subprocess.Popen[bytes]) -> int:
    assert proc.stdout is not None
    line = proc.stdout.readline()  # the stopper exits (at the latest in 120 s)
    assert line.strip().isdigit(), "alice's stopper found no helper to stop"
    pid = int(line)
    wait_for(lambda: state(pid) in ("T", "t", ""), what="the helper to stop")
    return pid


def state(pid: int) -> str:
    """The process's state letter ("" once it is gone)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return raw.rsplit(")", 1)[1].split()[0]


def daemon_answers_bob(daemon: Daemon, bob: UnixUser, pid: int) -> None:
    assert state(pid) in ("T", "t"), "the helper should still be stopped"
    answer = daemon.as_user(bob, "GET", "/v1/jobs?scope=mine")
    assert answer.status == 200, answer.body
    assert state(pid) in ("T", "t"), "answered only once the helper was gone"


def killed_at_its_deadline(pid: int) -> None:
    wait_for(lambda: state(pid) in ("", "Z"), timeout=90, what="the stopped helper killed")


def users(daemon: Daemon, make_user: Any) -> tuple[UnixUser, UnixUser]:
    alice, bob = make_user(), make_user()
    for user in (alice, bob):
        assert daemon.admin("user", "add", user.name).returncode == 0
    return alice, bob


def test_a_stopped_tensorboard_reader_is_killed_at_its_deadline(
        daemon: Daemon, make_user: Any, stoppers: list[subprocess.Popen[bytes]]) -> None:
    pytest.importorskip("tensorboard")
    alice, bob = users(daemon, make_user)
    stopper = stop_first(alice, "/tb_read.py", stoppers)
    job = submit(daemon, alice, 'mkdir -p "$NAI_OUTPUT_DIR/runs" && exec sleep 600',
                 metrics={"tensorboard": "runs"})
    try:
        pid = stopped_pid(stopper)
        daemon_answers_bob(daemon, bob, pid)
        killed_at_its_deadline(pid)
        wait_for(lambda: "TensorBoard scalars not read" in daemon.log(),
                 what="the reading given up")
        assert info(daemon, alice, job)["state"] == "running"
    finally:  # a job outlives its daemon
        assert daemon.as_user(alice, "DELETE", f"/v1/jobs/{job}").status == 200


def test_a_stopped_output_reader_is_killed_at_its_deadline(
        daemon_factory: Any, make_user: Any, hook: Path,
        stoppers: list[subprocess.Popen[bytes]], monkeypatch: pytest.MonkeyPatch) -> None:
    (hook / "sitecustomize.py").write_text(NO_FORKS)
    monkeypatch.setenv("NAI_TEST_NO_FORKS", "1")
    daemon: Daemon = daemon_factory(jobs={"collect_timeout_seconds": 3})
    daemon.start()
    alice, bob = users(daemon, make_user)
    stopper = stop_first(alice, "/output_walk.py", stoppers)
    job = submit(daemon, alice, 'echo mine > "$NAI_OUTPUT_DIR/a.txt"')
    pid = stopped_pid(stopper)
    daemon_answers_bob(daemon, bob, pid)
    killed_at_its_deadline(pid)
    done = ended(daemon, alice, job)
    assert "took longer than 3 s" in (done.get("message") or ""), done


def test_a_stopped_folder_emptier_is_killed_at_its_deadline(
        daemon_factory: Any, make_user: Any, hook: Path, tmp_path: Path,
        stoppers: list[subprocess.Popen[bytes]], monkeypatch: pytest.MonkeyPatch) -> None:
    """The daemon killed while starting alice's job: at its next start, the job's
    directory (with her output/) is removed, her folder emptied as her."""
    (hook / "sitecustomize.py").write_text(DIE_AT_GO)
    marker = tmp_path / "die-at-go"
    marker.touch()
    monkeypatch.setenv("NAI_TEST_DIE_AT_GO", str(marker))
    daemon: Daemon = daemon_factory(jobs={"collect_timeout_seconds": 3})
    daemon.start()
    alice, bob = users(daemon, make_user)
    job = submit(daemon, alice, "echo ran")
    assert daemon.proc is not None
    wait_for(lambda: daemon.proc.poll() is not None,  # type: ignore[union-attr]
             what="the daemon to die while starting the job")
    assert daemon.proc.returncode == -signal.SIGKILL
    job_dir = daemon.state / "jobs" / str(job)
    wait_for(lambda: b"unstarted" in (job_dir / STATUS_FILE).read_bytes(),
             what="the wrapper to see the daemon gone")
    subprocess.run(["touch", str(job_dir / "output" / "mine.txt")], user=alice.uid,
                   group=alice.gid, extra_groups=[], check=True)
    stopper = stop_first(alice, "/output", stoppers)

    daemon.start()
    pid = stopped_pid(stopper)
    daemon_answers_bob(daemon, bob, pid)
    assert ended(daemon, alice, job)["state"] == "succeeded"  # built again, and run
    killed_at_its_deadline(pid)
    wait_for(lambda: "could not be removed safely" in daemon.log(), what="the removal given up")

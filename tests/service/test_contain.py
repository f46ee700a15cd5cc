"""A job's processes end with it: background children, setsid grandchildren, and its
user's processes left on its GPUs; and its end survives a failed write and a daemon
that was down when it came. Real job processes, checked through /proc."""

from __future__ import annotations

import errno
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from nai_server.api import create_app
from nai_server.app.use_cases import UseCases
from nai_server.host import contain
from nai_server.host.launchers.local import proc_start_ticks, read_exit_status
from nai_server.protocol import TERMINAL_STATES
from nai_server.store import atomic, journal
from nai_server.store.atomic import CommitFailed
from nai_server.testing import AsPeer, make_service, tick_until, wait_for

TERMINAL = TERMINAL_STATES


def submit(api: TestClient, command: str, **spec: object) -> int:
    response = api.post("/v1/jobs", json={"spec": {"command": command, "gpus": 1, **spec}})
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def info(api: TestClient, job_id: int) -> dict:
    return api.get(f"/v1/jobs/{job_id}").json()


def ended(api: TestClient, job_id: int):
    return lambda: info(api, job_id)["state"] in TERMINAL


def pids_in(path: Path, count: int) -> list[int]:
    """The pids a job wrote, one a line, once all `count` are there."""
    def look() -> list[int] | None:
        lines = path.read_text().split() if path.exists() else []
        return [int(p) for p in lines] if len(lines) == count else None
    return wait_for(look, what=f"{count} pid(s) in {path.name}")


def alive(pid: int) -> bool:
    return proc_start_ticks(pid) is not None  # a zombie is not alive


needs_cgroups = pytest.mark.skipif(
    contain.detect().root is None or os.geteuid() != 0,
    reason="no cgroup can be made here (no cgroup2 mounted, or not root)")


def ticks_now() -> int:
    """Clock ticks since boot, as process start times count them."""
    return int(float(Path("/proc/uptime").read_text().split()[0]) * os.sysconf("SC_CLK_TCK"))


@pytest.fixture
def fallback(service: UseCases) -> UseCases:
    """The service as on a host where no cgroup can be made."""
    service.runtime.contain.close(set())
    service.runtime.contain = contain.Containment(service.config.state,
                                                  contain.Layout("none", None))
    return service


# Leaves a background child and a setsid grandchild that ignores SIGTERM.
LEAVES = ("sleep 300 & echo $! >> {pids}; "
          "setsid sh -c 'trap \"\" TERM; echo $$ >> {pids}; exec sleep 300' & ")


@needs_cgroups
def test_what_a_job_leaves_behind_is_killed_when_it_ends(
        api: TestClient, service: UseCases, tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    job = submit(api, LEAVES.format(pids=pids) + f'while [ "$(wc -l < {pids})" -lt 2 ]; '
                 "do sleep 0.01; done; exit 0")
    tick_until(service, ended(api, job), what="the job to end")
    done = info(api, job)
    assert done["state"] == "succeeded" and done["exit_code"] == 0
    assert done["message"] == "2 leftover processes of the job were killed"
    for pid in pids_in(pids, 2):
        wait_for(lambda p=pid: not alive(p), what=f"leftover {pid} to go")
    cgroup = service.runtime.contain.path(job)
    assert cgroup is not None
    tick_until(service, lambda: not cgroup.exists(), what="the job's cgroup to be removed")


@needs_cgroups
def test_cancel_kills_what_left_the_jobs_session(
        api: TestClient, service: UseCases, tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    job = submit(api, LEAVES.format(pids=pids) + "while :; do sleep 0.02; done")
    service.tick()
    escaped = pids_in(pids, 2)
    api.delete(f"/v1/jobs/{job}")
    tick_until(service, ended(api, job), what="the cancelled job to end")
    assert info(api, job)["state"] == "cancelled"
    for pid in escaped:
        wait_for(lambda p=pid: not alive(p), what=f"process {pid} of the job to go")


def test_without_cgroups_the_jobs_session_is_killed(
        api: TestClient, fallback: UseCases, tmp_path: Path) -> None:
    pids = tmp_path / "pids"
    job = submit(api, f"sleep 300 & echo $! >> {pids}; sleep 300 & echo $! >> {pids}; "
                      f'while [ "$(wc -l < {pids})" -lt 2 ]; do sleep 0.01; done; exit 0')
    tick_until(fallback, ended(api, job), what="the job to end")
    assert info(api, job)["message"] == "2 leftover processes of the job were killed"
    for pid in pids_in(pids, 2):
        wait_for(lambda p=pid: not alive(p), what=f"leftover {pid} to go")


@pytest.fixture
def stray() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        proc.kill()
        proc.wait()


def test_the_users_processes_left_on_the_jobs_gpu_are_killed(
        api: TestClient, fallback: UseCases, tmp_path: Path,
        stray: list[subprocess.Popen[bytes]]) -> None:
    """NVML still lists a process that escaped everything else (here: one that never
    was in the job's session); it is killed if it started after the job did."""
    before = subprocess.Popen(["sleep", "300"], start_new_session=True)
    stray.append(before)
    wait_for(lambda: ticks_now() > (proc_start_ticks(before.pid) or 0) + 1,
             what="the clock to pass the first process's start")
    gate = tmp_path / "go"
    job = submit(api, f"while [ ! -e {gate} ]; do sleep 0.02; done")
    fallback.tick()
    gpu = info(api, job)["gpus"][0]
    wrapper = fallback.store.get_job(job)["pid_start"]
    wait_for(lambda: ticks_now() > wrapper + 1, what="the clock to pass the job's start")
    after = subprocess.Popen(["sleep", "300"], start_new_session=True)
    stray.append(after)
    for pid in (after.pid, before.pid, os.getpid()):
        fallback.gpus.add_foreign(gpu, pid=pid, used_memory=1 << 30)
    gate.touch()
    tick_until(fallback, ended(api, job), what="the job to end")
    assert info(api, job)["message"] == (
        f"1 process of the job's user still on GPU {gpu} after it ended was killed "
        f"(pid {after.pid})")
    assert after.wait(timeout=20) == -9
    assert before.poll() is None  # it was there before the job: not the job's


def test_an_end_whose_write_failed_is_kept_and_retried(
        api: TestClient, service: UseCases, monkeypatch: pytest.MonkeyPatch) -> None:
    job = submit(api, "exit 0", gpus=0)
    write, append = atomic.atomic_write, journal.write_record
    refused = []

    def full_disk(path: Path, data: bytes, mode: int = 0o600) -> None:
        if b'"succeeded"' in data:
            refused.append(path)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        write(path, data, mode)

    def full_journal(fd: int, data: bytes) -> None:
        if b'"succeeded"' in data:
            refused.append(fd)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        append(fd, data)

    monkeypatch.setattr(atomic, "atomic_write", full_disk)
    monkeypatch.setattr(journal, "write_record", full_journal)

    def tick() -> None:
        try:
            service.tick()
        except CommitFailed:
            pass

    wait_for(lambda: refused, what="the job's end to be refused by the disk", step=tick)
    assert info(api, job)["state"] == "running"  # rolled back
    # What the wrapper wrote is gone too: only the daemon's memory knows how it ended.
    (service.runtime.job_dir(job) / "run.status").unlink()
    monkeypatch.setattr(atomic, "atomic_write", write)
    monkeypatch.setattr(journal, "write_record", append)
    tick_until(service, ended(api, job), what="the end to be written")
    done = info(api, job)
    assert (done["state"], done["exit_code"]) == ("succeeded", 0)


def test_a_job_that_ended_while_the_daemon_was_down_ends_when_it_did(
        tmp_path: Path) -> None:
    state_dir, gate = tmp_path / "s", tmp_path / "go"
    first = make_service(state_dir)
    api = TestClient(AsPeer(create_app(first)), base_url="http://nai")
    job = submit(api, f"while [ ! -e {gate} ]; do sleep 0.02; done; exit 0")
    first.tick()
    started = info(api, job)["started_at"]
    first.close()
    gate.touch()
    job_dir = first.runtime.job_dir(job)
    wait_for(lambda: read_exit_status(job_dir) is not None, what="the job to end")
    exited = (job_dir / "run.status").stat().st_mtime

    later = time.time() + 3600  # the daemon comes back an hour later
    second = make_service(state_dir, clock=lambda: later)
    api = TestClient(AsPeer(create_app(second)), base_url="http://nai")
    tick_until(second, ended(api, job), what="the job's end to be noticed")
    done = info(api, job)
    assert done["state"] == "succeeded"
    assert done["ended_at"] == pytest.approx(exited) and started <= done["ended_at"]
    second.close()


@needs_cgroups
def test_a_process_that_left_the_jobs_session_is_still_counted_as_the_jobs(
        api: TestClient, service: UseCases, tmp_path: Path) -> None:
    """Its cgroup names the job: on a GPU the job was not given, the process is reported
    as the job's, not as someone's who bypassed the queue."""
    pids, gate = tmp_path / "pids", tmp_path / "go"
    job = submit(api, f"setsid sh -c 'echo $$ >> {pids}; exec sleep 300' & "
                      f"while [ ! -e {gate} ]; do sleep 0.02; done")
    service.tick()
    (escaped,) = pids_in(pids, 1)
    other = 1 - info(api, job)["gpus"][0]
    service.gpus.add_foreign(other, pid=escaped, used_memory=1 << 30)
    service.tick()
    gpus = {g["index"]: g for g in api.get("/v1/gpus").json()["gpus"]}
    assert [f["job"] for f in gpus[other]["foreign"]] == [job]
    service.gpus.clear_foreign()
    gate.touch()
    tick_until(service, ended(api, job), what="the job to end")
    wait_for(lambda: not alive(escaped), what="the escaped process to go")

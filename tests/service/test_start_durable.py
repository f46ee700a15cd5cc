"""A daemon killed while it starts a job (found by the torture test, issue 14): the
start is on disk before the job's process exists (a daemon killed between the launch
and its next group commit came back with the job still queued, and ran it a second
time), and a job whose wrapper never started runs once after the restart (it was
recorded lost, its half-built directory left behind for ever)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from nai_server.api import create_app
from nai_server.app.use_cases import UseCases
from nai_server.host import jobdir
from nai_server.host.launchers.local import Handle, LaunchRequest, read_exit_status
from nai_server.protocol import TERMINAL_STATES
from nai_server.store.journal import read_state
from nai_server.testing import AsPeer, make_service, tick_until, wait_for

TERMINAL = TERMINAL_STATES


def test_the_start_is_durable_before_the_process_runs(
        api: TestClient, service: UseCases, tmp_path: Path) -> None:
    state_file = tmp_path / "state" / "state.json"
    launcher = service.runtime.launcher
    real_start = launcher.start
    on_disk: list[Any] = []

    def start(request: LaunchRequest) -> Handle:
        # What a daemon killed right now would read back when it starts again.
        jobs = read_state(state_file)["jobs"]
        on_disk.append(jobs[str(request.job_id)]["state"])
        return real_start(request)

    launcher.start = start  # type: ignore[method-assign]
    job = api.post("/v1/jobs", json={"spec": {"command": "true", "gpus": 1}}).json()["id"]
    tick_until(service, lambda: api.get(f"/v1/jobs/{job}").json()["state"] in TERMINAL,
               what="the job to end")
    assert on_disk == ["starting"]


class Died(BaseException):
    """The daemon killed at this point (nothing after it runs, no handler catches it)."""


@pytest.mark.parametrize("where", ["copying the code", "launching the wrapper",
                                   "telling the wrapper to go", "recording the launch"])
def test_a_job_whose_start_the_daemon_died_in_runs_once_after_a_restart(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    """Killed while copying, before the wrapper ran, or before it was told to start the
    job (the job runs after the restart), or after the job ran but before that was
    recorded (it ended while the daemon was down: its end is taken as it was, and every
    later job still starts)."""
    state = tmp_path / "state"
    runs = tmp_path / "runs"
    first = make_service(state)
    with TestClient(AsPeer(create_app(first)), base_url="http://nai") as api:
        job = api.post("/v1/jobs", json={"spec": {"command": f"echo ran >> {runs}",
                                                   "gpus": 1}}).json()["id"]

    real_start = first.runtime.launcher.start

    def die(*args: Any, **_kwargs: Any) -> None:
        if where == "copying the code":  # half a copy under the temporary name
            (state / "jobs" / f".{job}.new" / "code").mkdir(parents=True)
        if where == "recording the launch":
            real_start(*args)
            wait_for(lambda: read_exit_status(state / "jobs" / str(job)) is not None,
                     what="the job to run and end")
        raise Died

    real_write = os.write

    def write(fd: int, data: bytes) -> int:  # the wrapper waits for "go", and sees EOF
        if data[:3] in (b"go\n", b"go "):  # "go N": with its stderr tagged
            raise Died
        return real_write(fd, data)

    if where == "copying the code":
        monkeypatch.setattr(jobdir, "fill", die)
    elif where == "telling the wrapper to go":
        monkeypatch.setattr(os, "write", write)
    else:
        monkeypatch.setattr(first.runtime.launcher, "start", die)
    with pytest.raises(Died):
        first.tick()
    first.close()
    monkeypatch.undo()

    again = make_service(state)  # the restart
    try:
        tick_until(again, lambda: again.store.get_job(job)["state"] in TERMINAL,
                   what="the job to end")
        ended = again.store.get_job(job)
        assert (ended["state"], ended["exit_code"]) == ("succeeded", 0)
        assert runs.read_text() == "ran\n"
        # Nothing left, nothing aside (what is discarded goes in the background).
        wait_for(lambda: sorted(os.listdir(state / "jobs")) == [str(job)],
                 what="only the job's directory")
    finally:
        again.close()

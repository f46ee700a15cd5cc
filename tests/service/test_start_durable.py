"""A job's start is on disk before its process starts (found by the torture test,
issue 14): a daemon killed between launching a job and its next group commit used to
come back with the job still queued on disk, and ran it a second time."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from starlette.testclient import TestClient

from nai_server.app.use_cases import UseCases
from nai_server.host.launchers.local import Handle, LaunchRequest
from nai_server.testing import tick_until

TERMINAL = {"succeeded", "failed", "cancelled", "timed_out", "lost"}


def test_the_start_is_durable_before_the_process_runs(
        api: TestClient, service: UseCases, tmp_path: Path) -> None:
    state_file = tmp_path / "state" / "state.json"
    launcher = service.runtime.launcher
    real_start = launcher.start
    on_disk: list[Any] = []

    def start(request: LaunchRequest) -> Handle:
        # What a daemon killed right now would read back when it starts again.
        jobs = json.loads(state_file.read_text())["jobs"]
        on_disk.append(jobs[str(request.job_id)]["state"])
        return real_start(request)

    launcher.start = start  # type: ignore[method-assign]
    job = api.post("/v1/jobs", json={"spec": {"command": "true", "gpus": 1}}).json()["id"]
    tick_until(service, lambda: api.get(f"/v1/jobs/{job}").json()["state"] in TERMINAL,
               what="the job to end")
    assert on_disk == ["starting"]

"""TensorBoard event files are the job's: the daemon (root) has them read by a helper
running as the job's owner, so a job that points `metrics: {tensorboard: ...}` at
event files its owner may not read gets nothing from them."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import Daemon  # type: ignore[import-not-found]

from nai_server.protocol import TERMINAL_STATES
from nai_server.testing import wait_for

pytest.importorskip("tensorboard")
TERMINAL = TERMINAL_STATES


def event_file(folder: Path, tag: str, value: float) -> Path:
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    writer = EventFileWriter(str(folder))
    writer.add_event(event_pb2.Event(step=1, wall_time=time.time(), summary=summary_pb2.Summary(
        value=[summary_pb2.Summary.Value(tag=tag, simple_value=value)])))
    writer.close()
    return next(folder.glob("events.out.tfevents.*"))


def test_event_files_are_read_as_the_jobs_owner(daemon: Daemon, make_user: Any) -> None:
    alice = make_user()
    assert daemon.admin("user", "add", alice.name).returncode == 0
    secret = daemon.root / "secret-runs"
    secret.mkdir(mode=0o700)
    event_file(secret, "secret", 0.125)  # root's: alice may not read it
    public = event_file(daemon.root / "public-runs", "mine", 0.5)
    os.chmod(public.parent, 0o755)
    os.chmod(public, 0o644)
    command = (f"ln -s {secret} runs && mkdir -p \"$NAI_OUTPUT_DIR/runs\" && "
               f"cp {public} \"$NAI_OUTPUT_DIR/runs/\"")
    made = daemon.as_user(alice, "POST", "/v1/jobs", {"spec": {
        "command": command, "gpus": 0, "metrics": {"tensorboard": "runs"}}})
    assert made.status == 201, made.json()
    job_id = made.json()["id"]
    job = wait_for(lambda: (lambda j: j if j["state"] in TERMINAL else None)(
        daemon.as_user(alice, "GET", f"/v1/jobs/{job_id}").json()), what="the job's end")
    assert job["state"] == "succeeded", job
    rows = daemon.as_user(alice, "GET", f"/v1/jobs/{job_id}/metrics").json()["metrics"]
    # Its own file is read (so the reader ran); root's, behind the link, is not.
    assert [r.get("mine") for r in rows] == [0.5], rows
    assert not any("secret" in r for r in rows)

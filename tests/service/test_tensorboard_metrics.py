"""TensorBoard scalars as metrics (`metrics: {tensorboard: runs/}`): a job that writes
event files, as PyTorch's SummaryWriter or Keras do, gets its scalars in metrics.jsonl
while it runs and at its end, read by a helper running as its owner."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from nai_server.app.use_cases import UseCases
from nai_server.host import metrics_ingest
from nai_server.testing import tick_until

pytest.importorskip("tensorboard")
END = {"succeeded", "failed", "cancelled", "timed_out", "lost"}
# Written with TensorBoard's own writer: simple_value scalars (what SummaryWriter
# writes) and a scalar tensor of the scalars plugin (what TF2 and Keras write).
WRITER = """
import os, struct, sys, time
from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2
from tensorboard.summary.writer.event_file_writer import EventFileWriter
w = EventFileWriter("runs/exp1", flush_secs=1)
def scalar(step, tag, value, tensor=False):
    if tensor:
        v = summary_pb2.Summary.Value(tag=tag, tensor=tensor_pb2.TensorProto(
            dtype=1, tensor_content=struct.pack("<f", value)))
        v.metadata.plugin_data.plugin_name = "scalars"
    else:
        v = summary_pb2.Summary.Value(tag=tag, simple_value=value)
    w.add_event(event_pb2.Event(step=step, wall_time=time.time(),
                                summary=summary_pb2.Summary(value=[v])))
scalar(1, "Loss/train", 0.5)
scalar(1, "val_acc", 0.75, tensor=True)
w.flush()
while not os.path.exists(sys.argv[1]):
    time.sleep(0.02)
scalar(2, "Loss/train", 0.25)
w.close()
"""


def rows(api: TestClient, job_id: int) -> list[dict]:
    return list(api.get(f"/v1/jobs/{job_id}/metrics").json()["metrics"])


def test_event_file_scalars_become_metrics(api: TestClient, service: UseCases,
                                           tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(metrics_ingest, "TB_EVERY", 0.0)
    (tmp_path / "writer.py").write_text(WRITER)
    gate = tmp_path / "go"
    made = api.post("/v1/jobs", json={"spec": {
        "command": f"{sys.executable} {tmp_path / 'writer.py'} {gate}", "gpus": 0,
        "metrics": {"tensorboard": "runs/"}}})
    assert made.status_code == 201, made.text
    job_id = made.json()["id"]
    tick_until(service, lambda: len(rows(api, job_id)) == 2, what="the first scalars")
    got = {(r["step"], k): v for r in rows(api, job_id) for k, v in r.items()
           if k not in ("step", "time")}
    assert got == {(1, "Loss/train"): 0.5, (1, "val_acc"): 0.75}
    # No more readings while it runs: the last point can only come from the one at its end.
    monkeypatch.setattr(metrics_ingest, "TB_EVERY", 1e9)
    service.tick()
    tick_until(service, lambda: job_id not in service.runtime.metrics._tb,
               what="the reading under way")
    gate.touch()
    tick_until(service, lambda: api.get(f"/v1/jobs/{job_id}").json()["state"] in END,
               what="the job's end")
    assert [(r["step"], r.get("Loss/train")) for r in rows(api, job_id)] == [
        (1, 0.5), (1, None), (2, 0.25)]  # nothing read twice
    assert all(isinstance(r["time"], float) for r in rows(api, job_id))

"""The daemon reads a job's log and appends to its metrics.jsonl as root: a job (or the
owner of a job directory made by an older version) that swaps either for a link or a
FIFO must not make it write another file or hang."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from nai_server.core.job import Job
from nai_server.core.metric_patterns import Matcher, parse_metrics
from nai_server.host import jobfiles
from nai_server.host.metrics_ingest import MetricsIngest

MATCHER = Matcher(parse_metrics(r"loss=(?P<loss>[\d.]+)"))


def job_dir(tmp_path: Path) -> Path:
    path = tmp_path / "jobs" / "1"
    path.mkdir(parents=True)
    (path / "log").write_text("loss=0.5\n")
    return path


def test_metrics_file_swapped_for_a_link_is_never_written(tmp_path: Path) -> None:
    path = job_dir(tmp_path)
    victim = tmp_path / "shadow"
    victim.write_text("root:x:0:0\n")
    (path / "metrics.jsonl").symlink_to(victim)
    ingest = MetricsIngest(tmp_path / "jobs")
    with pytest.raises(jobfiles.UnsafeJobFile):
        ingest.ingest(1, MATCHER, final=True)
    ingest.poll([Job.from_doc({"id": 1, "user": "u", "state": "running", "submitted_at": 0.0,
                               "spec": {"command": "x", "metrics": parse_metrics(
                                   r"loss=(?P<loss>[\d.]+)")}})])  # the tick goes on
    assert victim.read_text() == "root:x:0:0\n"


def test_log_swapped_for_a_link_or_a_fifo_is_not_read(tmp_path: Path) -> None:
    path = job_dir(tmp_path)
    (path / "metrics.jsonl").touch()
    secret = tmp_path / "secret"
    secret.write_text("loss=0.123\n")
    (path / "log").unlink()
    (path / "log").symlink_to(secret)
    with pytest.raises(jobfiles.UnsafeJobFile):
        MetricsIngest(tmp_path / "jobs").ingest(1, MATCHER, final=True)
    (path / "log").unlink()
    os.mkfifo(path / "log")  # opening it for reading would block without O_NONBLOCK
    with pytest.raises(jobfiles.UnsafeJobFile):
        MetricsIngest(tmp_path / "jobs").ingest(1, MATCHER, final=True)
    assert (path / "metrics.jsonl").read_text() == ""


def test_forged_cursor_cannot_break_the_reading(tmp_path: Path) -> None:
    path = job_dir(tmp_path)
    (path / "metrics.jsonl").touch()
    (path / "metrics.ingest").write_text(json.dumps(
        {"offset": -5, "counts": ["x", 2**70], "epoch": "y", "last": [1]}))
    MetricsIngest(tmp_path / "jobs").ingest(1, MATCHER, final=True)
    assert json.loads((path / "metrics.jsonl").read_text())["loss"] == 0.5


def test_root_stops_adding_points_once_metrics_jsonl_is_at_its_cap(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The daemon's appends ignore the user's disk quota: a job printing metric lines
    without end must not fill the state disk through them."""
    import nai_server.host.metrics_ingest as ingest_module

    path = job_dir(tmp_path)
    (path / "metrics.jsonl").write_bytes(b"")
    monkeypatch.setattr(ingest_module, "METRICS_MAX", 600)
    (path / "log").write_text("".join(f"loss=0.{i}\n" for i in range(200)))
    MetricsIngest(tmp_path / "jobs").ingest(1, MATCHER, final=True)
    size = (path / "metrics.jsonl").stat().st_size
    assert size <= 600  # one batch is added whole or not at all

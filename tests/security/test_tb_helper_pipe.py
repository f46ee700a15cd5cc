"""The helpers that read a job's event files and outputs run as the job's owner, who
may (through ptrace, where the host allows it) make one start a process in a session
of its own that keeps the answer pipe open. Killing the helper's process group does
not end that process, so the daemon must stop reading at its deadline, not when the
pipe closes."""

from __future__ import annotations

import os
import signal
import threading
import types
from pathlib import Path

import pytest

from nai_server.core.job import Job
from nai_server.host import metrics_ingest, tb_read

HOLDER = """\
import os, time
if os.fork() == 0:
    os.setsid()
    with open(os.path.join(os.path.dirname(__file__), "holder.pid"), "w") as f:
        f.write(str(os.getpid()))
    time.sleep(120)  # still holding the helper's stdout
    os._exit(0)
"""


def test_a_pipe_held_open_by_an_escaped_process_does_not_hold_the_reader(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    script = tmp_path / "holder.py"
    script.write_text(HOLDER)
    fake = types.SimpleNamespace(__file__=str(script), MAX_POINTS=tb_read.MAX_POINTS,
                                 MAX_FILES=tb_read.MAX_FILES)
    monkeypatch.setattr(metrics_ingest, "tb_read", fake)
    monkeypatch.setattr(metrics_ingest, "TB_TIMEOUT", 1.0)
    job = Job.from_doc({"id": 1, "user": "root", "state": "running", "submitted_at": 0.0,
                        "spec": {"command": "x", "metrics": {"tensorboard": "runs"}}})
    (tmp_path / "jobs" / "1" / "code").mkdir(parents=True)
    answers: list[dict] = []
    reader = threading.Thread(
        target=lambda: answers.append(
            metrics_ingest.MetricsIngest(tmp_path / "jobs").read_events(job, {})),
        daemon=True)
    try:
        reader.start()
        reader.join(60)  # the holder keeps the pipe for 120 s
        assert not reader.is_alive(), "the reader waited for the pipe to close"
        assert answers and "error" in answers[0]
    finally:
        pid_file = tmp_path / "holder.pid"
        if pid_file.exists():
            os.kill(int(pid_file.read_text()), signal.SIGKILL)


def test_the_output_reader_is_held_to_its_deadline_in_the_same_way(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from nai_server.core.trees import UNLIMITED, TreeError
    from nai_server.host import outputs
    from nai_server.store.blobs import BlobStore

    script = tmp_path / "holder.py"
    script.write_text(HOLDER)
    monkeypatch.setattr(outputs, "output_walk", types.SimpleNamespace(__file__=str(script)))
    (tmp_path / "output").mkdir()
    errors: list[Exception] = []

    def collect() -> None:
        try:
            outputs.collect(BlobStore(tmp_path / "blobs"), tmp_path / "output", UNLIMITED,
                            outputs.RunAs(), timeout=1.0)
        except TreeError as exc:
            errors.append(exc)

    reader = threading.Thread(target=collect, daemon=True)
    try:
        reader.start()
        reader.join(60)  # the holder keeps the pipe for 120 s
        assert not reader.is_alive(), "the output reader waited for the pipe to close"
        assert errors and "longer than 1 s" in str(errors[0])
    finally:
        pid_file = tmp_path / "holder.pid"
        if pid_file.exists():
            os.kill(int(pid_file.read_text()), signal.SIGKILL)

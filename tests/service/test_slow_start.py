"""A job whose directory is slow to build (its dataset is a million files to link, in
the real case) starts in its owner's lane, outside the lock and the loop: meanwhile the
daemon answers, reaps and starts other jobs, and a job cancelled while it is being
built ends without any of it running. The slowness is the dataset's mount held at a
gate, in process, with real job processes."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from nai_server.app.use_cases import UseCases
from nai_server.testing import tick_until, upload_tree

END = {"succeeded", "failed", "cancelled", "timed_out", "lost"}


class Gate:
    """Holds every dataset mount (materialise with links) until opened."""

    def __init__(self, service: UseCases, monkeypatch: pytest.MonkeyPatch) -> None:
        self.opened, self.entered = threading.Event(), threading.Event()
        real = service.blobs.materialise

        def slow(tree_id: str, dest: Path, *, link: bool) -> None:
            if link:
                self.entered.set()
                self.opened.wait(30)
            real(tree_id, dest, link=link)

        monkeypatch.setattr(service.blobs, "materialise", slow)


@pytest.fixture
def gate(service: UseCases, monkeypatch: pytest.MonkeyPatch) -> Iterator[Gate]:
    made = Gate(service, monkeypatch)
    yield made
    made.opened.set()  # before the service closes, which waits for the build


def submit(api: TestClient, spec: dict[str, Any]) -> int:
    made = api.post("/v1/jobs", json={"spec": {"gpus": 0, **spec}})
    assert made.status_code == 201, made.text
    return int(made.json()["id"])


def state(api: TestClient, job_id: int) -> str:
    return str(api.get(f"/v1/jobs/{job_id}").json()["state"])


@pytest.fixture
def dataset(api: TestClient) -> str:
    made = api.post("/v1/datasets", json={"name": "big",
                                          "tree_id": upload_tree(api, {"a.txt": b"seen"})})
    assert made.status_code == 201, made.text
    return "big"


def test_a_slow_build_holds_up_no_other_job(api: TestClient, service: UseCases,
                                            gate: Gate, dataset: str) -> None:
    slow = submit(api, {"command": 'cp "$NAI_DATASET_DIR/a.txt" "$NAI_OUTPUT_DIR/got"',
                        "dataset": dataset})
    service.tick()
    assert gate.entered.is_set()
    assert state(api, slow) == "starting"  # the tick went on without it

    # The lock is free (a submit answers) and the loop runs: another job starts and ends.
    quick = submit(api, {"command": "echo quick"})
    tick_until(service, lambda: state(api, quick) in END, what="the quick job to end")
    assert state(api, quick) == "succeeded"
    assert state(api, slow) == "starting"

    gate.opened.set()
    tick_until(service, lambda: state(api, slow) in END, what="the slow job to end")
    job = api.get(f"/v1/jobs/{slow}").json()
    assert job["state"] == "succeeded", job
    got = api.get(f"/v1/jobs/{slow}/outputs/file", params={"path": "got"})
    assert got.text == "seen"


def test_a_job_cancelled_while_being_built_never_runs(api: TestClient, service: UseCases,
                                                      gate: Gate, dataset: str) -> None:
    slow = submit(api, {"command": 'touch "$NAI_OUTPUT_DIR/ran"', "dataset": dataset})
    service.tick()
    assert state(api, slow) == "starting"
    assert api.delete(f"/v1/jobs/{slow}").status_code == 200

    gate.opened.set()
    tick_until(service, lambda: state(api, slow) in END, what="the job to end")
    job = api.get(f"/v1/jobs/{slow}").json()
    assert job["state"] == "cancelled", job
    assert job["message"] == "cancelled before it started"
    assert not (service.runtime.job_dir(slow) / "output" / "ran").exists()


def test_a_restarted_daemon_builds_an_unfinished_start_again(
        api: TestClient, service: UseCases, gate: Gate, dataset: str,
        tmp_path: Path) -> None:
    """The daemon stopped while the job's directory was being built: the next one puts
    the job back in the queue, builds it anew and runs it once."""
    from nai_server.testing import make_service

    slow = submit(api, {"command": 'echo ran >> "$NAI_OUTPUT_DIR/runs"', "dataset": dataset})
    service.tick()
    assert state(api, slow) == "starting"
    gate.opened.set()
    service.close()  # waits for the build it began; the job never started

    again = make_service(tmp_path / "state")
    try:
        tick_until(again, lambda: (job := again.jobs.records.get(slow)) is not None
                   and job.state in END, what="the job to end under the new daemon")
        job = again.jobs.records.get(slow)
        assert job is not None and job.state == "succeeded", job
        runs = again.runtime.job_dir(slow) / "output" / "runs"
        assert runs.read_text() == "ran\n"
    finally:
        again.close()

"""Ending a job: its outputs are collected outside the daemon's lock, so no request and
no other job waits on one job's files; metrics reads stay bounded however the job
writes its file."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from nai_server.api import create_app
from nai_server.app import job_metrics
from nai_server.app.use_cases import UseCases
from nai_server.host.lanes import Lanes
from nai_server.testing import AsPeer, make_service, tick_until, wait_for


class GatedExecutor(Lanes):
    """Collections start at once but finish only when the gate opens."""

    def __init__(self) -> None:
        super().__init__(2, "gated")
        self.gate = threading.Event()
        self.started = threading.Event()

    def submit(self, key: str, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        def gated() -> Any:
            self.started.set()
            self.gate.wait(30)
            return fn(*args)

        return super().submit(key, gated)


@pytest.fixture
def gated(tmp_path: Path) -> Iterator[tuple[UseCases, TestClient, GatedExecutor]]:
    service = make_service(tmp_path / "state", gpus=1)
    executor = GatedExecutor()
    service.runtime.collections.lanes = executor
    with TestClient(AsPeer(create_app(service)), base_url="http://nai") as api:
        yield service, api, executor
    executor.gate.set()
    service.close()


def test_a_collection_holds_neither_the_lock_nor_the_queue(
        gated: tuple[UseCases, TestClient, GatedExecutor]) -> None:
    service, api, executor = gated
    first = api.post("/v1/jobs", json={"spec": {
        "command": 'echo out > "$NAI_OUTPUT_DIR/out.txt"', "gpus": 1}}).json()["id"]
    service.tick()
    wait_for(executor.started.is_set, step=service.tick, what="the collection to start")
    # While it is collected the job still holds its GPU, and everything else goes on.
    assert api.get(f"/v1/jobs/{first}").json()["state"] == "running"
    marker = service.runtime.jobs_dir.parent / "second-ran"
    second = api.post("/v1/jobs", json={"spec": {"command": f"touch {marker}", "gpus": 0}}
                      ).json()["id"]
    tick_until(service, marker.exists, what="a CPU job to run beside the collection")
    assert api.get(f"/v1/jobs/{first}").json()["state"] == "running"
    executor.gate.set()
    for job in (first, second):
        info = tick_until(service, lambda j=job: (i := api.get(f"/v1/jobs/{j}").json())[
            "state"] == "succeeded" and i, what=f"job {job} to end")
        assert info["output_tree"] and info["exit_code"] == 0


def metrics_page(api: TestClient, job: int, since: int = 0) -> dict[str, Any]:
    response = api.get(f"/v1/jobs/{job}/metrics", params={"since": since})
    assert response.status_code == 200, response.text
    return response.json()


def test_metrics_reads_are_bounded_and_resume(
        api: TestClient, service: UseCases, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(job_metrics, "MAX_METRICS_LINE", 100)
    monkeypatch.setattr(job_metrics, "MAX_METRICS_SCAN", 1000)
    job = api.post("/v1/jobs", json={"spec": {"command": "true", "gpus": 0}}).json()["id"]
    tick_until(service, lambda: api.get(f"/v1/jobs/{job}").json()["state"] == "succeeded",
               what="the job to end")
    metrics = service.runtime.job_dir(job) / "metrics.jsonl"
    rows = [json.dumps({"step": i, "loss": 1 / (i + 1)}) for i in range(40)]
    metrics.write_text("\n".join([*rows[:10], "x" * 500, *rows[10:], '{"step": 99']))

    seen: list[dict[str, Any]] = []
    since, skipped, calls = 0, 0, 0
    while True:
        page = metrics_page(api, job, since)
        calls += 1
        seen += page["metrics"]
        skipped += page["skipped"]
        if page["next"] == since:
            break
        since = page["next"]
    assert [r["step"] for r in seen] == list(range(40))
    assert skipped == 1 and since == 41 and calls > 2  # several bounded reads
    # Asking again from the start reads it all again; the unfinished line waits.
    assert [r["step"] for r in metrics_page(api, job)["metrics"]][:3] == [0, 1, 2]
    with metrics.open("a") as f:
        f.write(', "loss": 0}\n')
    assert metrics_page(api, job, since)["metrics"] == [{"step": 99, "loss": 0}]

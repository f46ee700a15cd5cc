"""`POST /v1/jobs?dry_run=1`: a submit checked and planned, nothing created."""

from __future__ import annotations

from starlette.testclient import TestClient

from nai_server.app.use_cases import UseCases
from nai_server.testing import tick_until

SPEC = {"command": "sleep 30", "gpus": 2, "time_limit": "1h"}


def _submit(api: TestClient, spec: dict, dry: bool) -> object:
    return api.post("/v1/jobs", params={"dry_run": 1} if dry else None, json={"spec": spec})


def test_a_dry_run_answers_like_a_submit_and_creates_nothing(api: TestClient) -> None:
    dry = _submit(api, SPEC, dry=True)
    assert dry.status_code == 200 and "location" not in dry.headers
    job = dry.json()
    assert (job["id"], job["state"], job["reason"]) == (0, "queued", None)
    assert job["est_start"] == job["submitted_at"]  # an idle server: at once
    assert job["spec"]["gpus"] == 2 and job["spec"]["time_limit"] == 3600
    assert api.get("/v1/jobs").json()["total"] == 0
    # The same refusals as a submit, with the same words.
    for spec in ({**SPEC, "gpus": 5}, {**SPEC, "dataset": "nothing@1"},
                 {**SPEC, "priority": "urgent"}):
        real, trial = _submit(api, spec, dry=False), _submit(api, spec, dry=True)
        assert real.status_code >= 400 and trial.status_code == real.status_code
        assert trial.json() == real.json()
    assert api.get("/v1/jobs").json()["total"] == 0


def test_a_busy_server_dates_the_start_by_the_running_jobs_time_limit(
        api: TestClient, service: UseCases) -> None:
    running = _submit(api, SPEC, dry=False).json()
    tick_until(service, lambda: api.get(f"/v1/jobs/{running['id']}").json()["state"]
               == "running", what="the first job to run")
    started = api.get(f"/v1/jobs/{running['id']}").json()["started_at"]
    job = _submit(api, {**SPEC, "gpus": 1}, dry=True).json()
    assert job["reason"] == "Resources"
    assert job["est_start"] == started + 3600
    assert api.get("/v1/jobs").json()["total"] == 1
    api.delete(f"/v1/jobs/{running['id']}")


def test_gpus_held_by_service_replicas_are_not_free_to_a_dry_run(
        api: TestClient, service: UseCases) -> None:
    """The estimate plans from the tick's own view: GPUs a service's replicas hold are
    as taken as a running job's (a dry run said "at once" on them)."""
    from nai_server.core.sched_types import RunningJob

    gpus = tuple(g["index"] for g in api.get("/v1/gpus").json()["gpus"])
    service.runtime.held_elsewhere = lambda: [RunningJob(
        id=-1, user="svc", group=None, gpus=gpus, started_at=0.0, time_limit=None)]
    job = _submit(api, {**SPEC, "gpus": 1}, dry=True).json()
    assert job["reason"] == "Resources" and job["est_start"] != job["submitted_at"]

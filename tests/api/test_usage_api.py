"""`GET /v1/usage`: GPUs in use, decayed usage, fair-share standing and quota use per
user, from the accounting the scheduler plans with (as `sshare` shows it)."""

from __future__ import annotations

import getpass

from starlette.testclient import TestClient

from nai_server.app.use_cases import UseCases
from nai_server.testing import tick_until
from nai_tui.remote.usage import read_usage


def test_usage_shows_the_running_users_gpus_and_quota_use(
        api: TestClient, service: UseCases) -> None:
    me = getpass.getuser()
    assert api.get("/v1/usage").json()["rows"] == []  # an idle server: nobody
    api.post("/v1/users", json={"name": me})  # the personal owner, registered for a quota
    put = api.put(f"/v1/users/{me}/quota", json={"max_gpus": 3, "gpu_hours": 100,
                                                 "period_days": 7})
    assert put.status_code == 200, put.text
    job = api.post("/v1/jobs", json={"spec": {"command": "sleep 30", "gpus": 2,
                                              "time_limit": "1h"}}).json()
    tick_until(service, lambda: api.get(f"/v1/jobs/{job['id']}").json()["state"]
               == "running", what="the job to run")
    service.clock = lambda: service.jobs.runtime.clock() + 1800  # half an hour on
    report = api.get("/v1/usage").json()
    row = next(r for r in report["rows"] if r["kind"] == "user" and r["name"] == me)
    assert row["gpus_in_use"] == 2 and row["max_gpus"] == 3
    assert row["usage_gpu_hours"] > 0.5 and row["share"] == 1.0
    assert row["standing"] == 1.0 and row["factor"] == 0.5  # all the use is theirs
    assert 0.9 < row["used_gpu_hours"] < 1.1 and row["gpu_hours"] == 100
    assert row["period_days"] == 7 and report["half_life_hours"] > 0
    api.delete(f"/v1/jobs/{job['id']}")


def test_the_client_reads_the_usage_report(api: TestClient) -> None:
    from nai_tui.remote.client import ServerClient

    client = ServerClient(api, "in-process")  # TestClient is an httpx.Client
    assert read_usage(client).rows == []


def test_usage_counts_the_gpus_service_replicas_hold(
        api: TestClient, service: UseCases) -> None:
    """A replica holds its GPUs as a running job does (the tick plans around it), so
    its owner and their group are using them: /v1/usage says so from the tick's view."""
    from nai_server.app.service_gpus import SERVICE_ID_BASE
    from nai_server.core.sched_types import RunningJob

    replica = RunningJob(id=SERVICE_ID_BASE + 4096, user="bob", group="lab", gpus=(2, 3),
                         started_at=service.clock(), time_limit=None)
    service.jobs.runtime.held_elsewhere = lambda: [replica]
    rows = {(r["kind"], r["name"]): r for r in api.get("/v1/usage").json()["rows"]}
    assert rows[("user", "bob")]["gpus_in_use"] == 2
    assert rows[("group", "lab")]["gpus_in_use"] == 2

"""Notifiers hear of job events from a service stepped with tick(): after the change
is committed, from their own thread; one that raises or hangs does not stop the rest."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from nai_server.api import create_app
from nai_server.config import PluginConfig
from nai_server.plugins import PluginRegistry
from nai_server.plugins.contracts import JobEvent, Kind, hookimpl
from nai_server.plugins.notifiers import job_event
from nai_server.testing import AsPeer, make_service, tick_until, wait_for


class Recorder:
    def __init__(self) -> None:
        self.events: list[JobEvent] = []

    @hookimpl
    def nai_job_event(self, event: JobEvent) -> None:  # takes fewer args than offered
        self.events.append(event)


class Raises:
    @hookimpl
    def nai_job_event(self, event, options):
        raise ConnectionError("webhook down")


class Hangs:
    def __init__(self) -> None:
        self.gate = threading.Event()

    @hookimpl
    def nai_job_event(self, event, options):
        self.gate.wait()


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[TestClient, object, Recorder]]:
    recorder, hangs = Recorder(), Hangs()
    cfg = {"a_raises": PluginConfig(), "b_hangs": PluginConfig(timeout=0.2),
           "c_records": PluginConfig()}
    registry = PluginRegistry.from_objects(cfg, [
        ("a_raises", Kind.NOTIFIER, Raises()), ("b_hangs", Kind.NOTIFIER, hangs),
        ("c_records", Kind.NOTIFIER, recorder)])
    service = make_service(tmp_path / "state", plugins=registry)
    with TestClient(AsPeer(create_app(service)), base_url="http://nai") as api:
        yield api, service, recorder
    hangs.gate.set()
    service.close()


def test_started_succeeded_and_failed_reach_the_notifiers(setup, caplog) -> None:
    api, service, recorder = setup
    ok = api.post("/v1/jobs", json={"spec": {"command": "true", "name": "fine"}}).json()["id"]
    bad = api.post("/v1/jobs", json={"spec": {"command": "exit 3"}}).json()["id"]
    done = {"succeeded", "failed"}
    tick_until(service, lambda: {api.get(f"/v1/jobs/{j}").json()["state"] for j in (ok, bad)}
               <= done, what="both jobs to end")

    def told() -> dict[int, list[str]]:
        return {j: [e.event for e in recorder.events if e.job_id == j] for j in (ok, bad)}

    wait_for(lambda: told() == {ok: ["started", "succeeded"], bad: ["started", "failed"]},
             what=f"the events of both jobs (so far {told()})")
    last = [e for e in recorder.events if e.job_id == bad][-1]
    me = api.get("/v1/me").json()["user"]
    assert (last.exit_code, last.state, last.user, last.name) == (3, "failed", me, f"job-{bad}")
    assert "notifier a_raises failed on started" in caplog.text
    assert "notifier b_hangs failed" in caplog.text


def test_which_changes_are_events() -> None:
    job = {"id": 7, "user": "ann", "spec": {}}
    assert job_event("queued", {**job, "state": "starting"}) is None
    assert job_event("starting", {**job, "state": "running"}).event == "started"
    assert job_event("running", {**job, "state": "timed_out"}).event == "failed"
    assert job_event("running", {**job, "state": "queued"}).event == "preempted"
    assert job_event("queued", {**job, "state": "cancelled"}).event == "cancelled"
    assert job_event("running", {**job, "state": "running"}) is None

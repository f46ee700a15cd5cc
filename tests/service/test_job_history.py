"""The job history: listings page through the archives with a cursor, and reading
the archives never holds the lock that submits and ticks need."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from starlette.testclient import TestClient

from nai_server.app.accounts import Caller
from nai_server.app.use_cases import UseCases
from nai_server.store import history
from nai_server.testing import wait_for

OCT = time.mktime((2026, 10, 15, 0, 0, 0, 0, 0, 0))
NOV = time.mktime((2026, 11, 15, 0, 0, 0, 0, 0, 0))


def _finished(service: UseCases, count: int, archive: int) -> None:
    """`count` finished jobs (odd ids alice's, even ones bob's, every third failed),
    the first `archive` of them archived into two months, ids interleaved."""
    with service.lock:
        for i in range(1, count + 1):
            service.store.insert_job({
                "user": "alice" if i % 2 else "bob", "group": None,
                "state": "failed" if i % 3 == 0 else "succeeded",
                "spec": {"command": "true", "gpus": 0}, "code_tree": None,
                "submitted_at": float(i), "started_at": float(i),
                "ended_at": NOV if i % 4 else OCT, "exit_code": 0})
        service.store.archive_jobs(list(range(1, archive + 1)))


def _walk(api: TestClient, between: Any = None, **params: Any) -> list[int]:
    seen: list[int] = []
    before = None
    for _ in range(50):  # a cursor that does not move fails here, not forever
        query = {**params, **({"before": before} if before else {})}
        page = api.get("/v1/jobs", params=query).json()
        seen += [j["id"] for j in page["jobs"]]
        before = page["next_before"]
        if before is None:
            return seen
        if between:
            between()
    raise AssertionError(f"paging did not end; seen {seen[:20]}...")


def test_paging_reaches_every_archived_job_once_while_jobs_are_submitted(
        api: TestClient, service: UseCases) -> None:
    _finished(service, 30, archive=25)
    first = api.get("/v1/jobs", params={"limit": 4}).json()
    assert [j["id"] for j in first["jobs"]] == [30, 29, 28, 27] and first["total"] == 30

    submitted: list[int] = []

    def submit() -> None:
        response = api.post("/v1/jobs", json={"spec": {"command": "true", "gpus": 0}})
        assert response.status_code == 201, response.text
        submitted.append(response.json()["id"])

    assert _walk(api, submit, limit=4) == list(range(30, 0, -1))  # newer ones not mixed in
    assert _walk(api, submit, limit=3, state="failed", before=31) == list(range(30, 0, -3))
    assert _walk(api, limit=5, user="bob", before=31) == list(range(30, 0, -2))
    by_bob = api.get("/v1/jobs", params={"user": "bob", "state": "failed"}).json()
    assert by_bob["total"] == 5  # 6, 12, 18, 24, 30
    old = api.get("/v1/jobs", params={"offset": 3, "limit": 5, "before": 31}).json()
    assert [j["id"] for j in old["jobs"]] == [27, 26, 25, 24, 23]  # offset still works
    recent = api.get("/v1/jobs", params={"since": 20.5, "before": 31}).json()
    assert [j["id"] for j in recent["jobs"]] == list(range(30, 20, -1))
    # `total` counts every match, the cursor aside: the jobs submitted while paging too.
    assert recent["total"] == 10 + len(submitted) and recent["next_before"] is None
    assert api.get("/v1/jobs/3").json()["state"] == "failed"  # archived, still shown


def test_reading_an_archive_holds_no_lock_a_submit_needs(
        api: TestClient, service: UseCases, monkeypatch: pytest.MonkeyPatch) -> None:
    _finished(service, 10, archive=10)
    reading, release = threading.Event(), threading.Event()
    parse = history._parse

    def slow_parse(*args: Any) -> Any:
        reading.set()
        release.wait(30)
        return parse(*args)

    monkeypatch.setattr(history, "_parse", slow_parse)
    caller = Caller(service.accounts.owner, 0, True)
    pages: list[Any] = []
    lister = threading.Thread(target=lambda: pages.append(service.jobs.list(caller, before=9)))
    lister.start()
    try:
        wait_for(reading.is_set, what="the listing to reach the archive")
        submitted: list[int] = []
        submitter = threading.Thread(target=lambda: submitted.append(
            api.post("/v1/jobs", json={"spec": {"command": "true", "gpus": 0}}).status_code))
        submitter.start()
        wait_for(lambda: submitted, timeout=10, what="a submit during the archive read")
        assert submitted == [201]
    finally:
        release.set()
        lister.join(30)
    assert [j.id for j in pages[0].jobs] == list(range(8, 0, -1))


def test_a_job_both_hot_and_archived_after_a_crash_is_listed_once(
        api: TestClient, service: UseCases) -> None:
    """A crash between writing the archive and removing the hot copy leaves both;
    the hot copy wins."""
    _finished(service, 6, archive=6)
    with service.lock:
        doc = service.store.get_job(4)
        assert doc is not None
        service.store._hot()["4"] = {**doc, "message": "the hot copy"}
        service.store._write_hot()
    jobs = api.get("/v1/jobs", params={"limit": 3}).json()["jobs"]
    assert [j["id"] for j in jobs] == [6, 5, 4] and jobs[2]["message"] == "the hot copy"
    assert _walk(api, limit=2) == [6, 5, 4, 3, 2, 1]

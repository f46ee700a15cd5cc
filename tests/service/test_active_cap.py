"""The cap on one user's active jobs (`jobs.max_active_per_user`): the job past it is
refused with what to do, a job that ends makes room again, other users are not
touched, and a preempted job goes back to the queue whatever its owner holds.

A multi-user service on fake GPUs with a clock the test moves, running real job
processes, as in test_fairshare: the test's user submits through the in-process API,
a second user ("light", lent the test user's unix account) through the service."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from nai_server.store.atomic import CommitFailed
from tests.service.multi_user import ME, Server, serve

CAP = 3


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    with serve(tmp_path, monkeypatch, max_active_per_user=CAP) as running:
        yield running


def _refused_with_the_cap(response: object) -> None:
    assert response.status_code == 403, response.text  # type: ignore[attr-defined]
    error = response.json()["error"]  # type: ignore[attr-defined]
    assert error["code"] == "forbidden"
    assert error["message"] == (
        f"you have {CAP} jobs queued or running, the most this server allows one user "
        f"(jobs.max_active_per_user: {CAP}); wait for some to end or cancel some "
        f"(`nai jobs --mine`, `nai cancel ID...`)")
    assert error["details"]["limit"] == "jobs.max_active_per_user"


def test_the_job_past_the_cap_is_refused_and_an_ended_one_makes_room(
        server: Server) -> None:
    running = server.submit(server.gated("a"), gpus=1)
    server.wait(running, "running")
    drained = server.api.put("/v1/drain", json={"drained": True})  # the rest stay queued
    assert drained.status_code == 200, drained.text
    queued = [server.submit("true", gpus=1) for _ in range(CAP - 1)]
    _refused_with_the_cap(server.post("true", gpus=1))
    _refused_with_the_cap(server.api.post(  # a dry run says so too
        "/v1/jobs", params={"dry_run": 1}, json={"spec": {"command": "true", "gpus": 1}}))
    # Refused, nothing was queued: still CAP jobs, however often they try.
    _refused_with_the_cap(server.post("true", gpus=1))

    server.api.delete(f"/v1/jobs/{queued[0]}")  # a cancelled one frees its room
    server.submit("true", gpus=1)
    _refused_with_the_cap(server.post("true", gpus=1))

    server.open("a")  # one that runs to its end frees its room
    server.wait(running, "succeeded")
    server.submit("true", gpus=1)
    _refused_with_the_cap(server.post("true", gpus=1))


def test_another_user_is_not_held_by_ones_cap(server: Server) -> None:
    for _ in range(CAP):
        server.submit(server.gated("end"), gpus=2, time_limit="1h")
    _refused_with_the_cap(server.post("true", gpus=1))
    theirs = [server.submit_as("light", "true", gpus=1) for _ in range(CAP)]
    assert all(server.state(j) == "queued" for j in theirs)


def test_a_preempted_job_is_requeued_whatever_its_owner_holds(server: Server) -> None:
    big = server.submit("trap 'exit 0' TERM; while :; do sleep 0.02; done", gpus=2,
                        time_limit="4h", preemptible=True)
    server.wait(big, "running")
    for _ in range(CAP - 1):  # queued until it ends, whatever the GPUs do
        server.submit("true", gpus=1, after=[big])
    _refused_with_the_cap(server.post("true", gpus=1))
    server.now[0] += 600  # past preempt_min_run; the test's user is now over share

    light = server.submit_as("light", server.gated("light"), gpus=1, time_limit="1h")
    server.wait(big, "queued")  # requeued, not refused, at its owner's cap
    server.wait(light, "running")
    # The same job, counted once: still CAP jobs, no more.
    _refused_with_the_cap(server.post("true", gpus=1))
    server.open("light")


def test_a_count_taken_before_a_failed_commit_is_not_carried_on(
        server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    """Another writer's job, counted, is thrown away by a failed commit between one
    submit's check and its insert: the counts made before must not outlive it."""
    service, counts = server.service, server.service.jobs.active
    first = server.submit("true", gpus=2, time_limit="1h")
    doc = {k: v for k, v in service.store.get_job(first).items() if k != "id"}
    real_fsync, real_fdatasync = os.fsync, os.fdatasync

    def failing(fd: int) -> None:
        raise OSError(5, "Input/output error")

    with service.lock:
        service.store.insert_job(doc)  # not yet on disk
        counts.check(ME, CAP)
        assert counts.of(ME) == 2
        monkeypatch.setattr(os, "fsync", failing)
        monkeypatch.setattr(os, "fdatasync", failing)
        with pytest.raises(CommitFailed):
            service.store.commit()  # rolled back: the job inserted above is gone
        monkeypatch.setattr(os, "fsync", real_fsync)
        monkeypatch.setattr(os, "fdatasync", real_fdatasync)
        service.store.insert_job(doc)  # the submit's own insert
        counts.added(ME)
    active = [j for j in service.store.hot() if not j.terminal and j.user == ME]
    assert counts.of(ME) == len(active) == 2

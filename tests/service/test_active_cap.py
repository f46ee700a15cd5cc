"""The cap on one user's active jobs (`jobs.max_active_per_user`): the job past it is
refused with what to do, a job that ends makes room again, other users are not
touched, and a preempted job goes back to the queue whatever its owner holds.

A multi-user service on fake GPUs with a clock the test moves, running real job
processes, as in test_fairshare: the test's user submits through the in-process API,
a second user ("light", lent the test user's unix account) through the service."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from nai_server.api import create_app
from nai_server.app.accounts import Caller
from nai_server.app.use_cases import UseCases
from nai_server.core.spec import spec_from_dict
from nai_server.host import unix
from nai_server.store.atomic import CommitFailed
from nai_server.testing import AsPeer, make_service, tick_until

ME = unix.user_name(os.getuid()) or str(os.getuid())
T0 = 1_700_000_000.0
ENDED = {"succeeded", "failed", "cancelled", "timed_out", "lost"}
CAP = 3


@dataclass
class Server:
    """A multi-user service whose users may each have CAP jobs active, its API as the
    test's user, its clock, and gate files."""

    service: UseCases
    api: TestClient
    now: list[float]
    gates: Path

    def gated(self, name: str) -> str:
        """A job command that runs until the test opens its gate."""
        return f"while [ ! -e {self.gates / name} ]; do sleep 0.02; done"

    def open(self, name: str) -> None:
        (self.gates / name).touch()

    def post(self, command: str, **spec: object) -> object:
        return self.api.post("/v1/jobs", json={"spec": {"command": command, **spec}})

    def submit(self, command: str, **spec: object) -> int:
        response = self.api.post("/v1/jobs", json={"spec": {"command": command, **spec}})
        assert response.status_code == 201, response.text
        return int(response.json()["id"])

    def submit_as(self, user: str, command: str, **spec: object) -> int:
        caller = Caller(user, uid=60_000, admin=False)
        return self.service.jobs.submit(
            caller, spec_from_dict({"command": command, **spec}), None).id

    def state(self, job_id: int) -> str:
        response = self.api.get(f"/v1/jobs/{job_id}")
        assert response.status_code == 200, response.text
        return str(response.json()["state"])

    def wait(self, job_id: int, *states: str) -> None:
        tick_until(self.service, lambda: self.state(job_id) in states,
                   what=f"job {job_id} to be {' or '.join(states)}")


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    account = unix.unix_account
    monkeypatch.setattr(unix, "unix_account",
                        lambda name: account(ME if name == "light" else name))
    now = [T0]
    service = make_service(tmp_path / "s", mode="multi-user", clock=lambda: now[0],
                           jobs={"max_active_per_user": CAP, "cancel_grace_seconds": 30})
    service.accounts.add_user(ME)
    if os.geteuid() != 0:
        service.accounts.add_member("admins", ME)  # to drain the server
    gates = tmp_path / "gates"
    gates.mkdir()
    with TestClient(AsPeer(create_app(service)), base_url="http://nai") as api:
        yield Server(service, api, now, gates)
        api.put("/v1/drain", json={"drained": False})
        for job in api.get("/v1/jobs").json()["jobs"]:  # whatever a failed test left
            if job["state"] not in ENDED and job["user"] == ME:
                api.delete(f"/v1/jobs/{job['id']}")
        for job in service.runtime.jobs.hot():
            if not job.terminal and job.user == "light":
                service.jobs.cancel(Caller("light", uid=60_000, admin=False), job.id)
        tick_until(service, lambda: not service.busy(), what="every job to end")
    service.close()


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

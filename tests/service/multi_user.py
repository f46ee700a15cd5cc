"""A multi-user service on fake GPUs with a clock the test moves, running real job
processes, for the tests of fair share, quotas, preemption and per-user caps.

The test's own unix user submits through the in-process API; a second user ("light")
submits through the service. "light" has no unix account here, and a root daemon never
runs a job without one, so `serve` lends "light" the test user's account (their jobs
then run as the test's user)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from nai_server.api import create_app
from nai_server.app.accounts import Caller
from nai_server.app.use_cases import UseCases
from nai_server.core.spec import spec_from_dict
from nai_server.host import unix
from nai_server.testing import AsPeer, make_service, tick_until

ME = unix.user_name(os.getuid()) or str(os.getuid())
T0 = 1_700_000_000.0
ENDED = {"succeeded", "failed", "cancelled", "timed_out", "lost"}


@dataclass
class Server:
    """The service, its API as the test's user, its clock, and gate files."""

    service: UseCases
    api: TestClient
    now: list[float]
    gates: Path

    def gated(self, name: str) -> str:
        """A job command that runs until the test opens its gate."""
        return f"while [ ! -e {self.gates / name} ]; do sleep 0.02; done"

    def open(self, name: str) -> None:
        (self.gates / name).touch()

    def post(self, command: str, **spec: object) -> Any:
        """The API's answer to submitting this job as the test's user."""
        return self.api.post("/v1/jobs", json={"spec": {"command": command, **spec}})

    def submit(self, command: str, **spec: object) -> int:
        response = self.post(command, **spec)
        assert response.status_code == 201, response.text
        return int(response.json()["id"])

    def submit_as(self, user: str, command: str, **spec: object) -> int:
        caller = Caller(user, uid=60_000, admin=False)
        return self.service.jobs.submit(
            caller, spec_from_dict({"command": command, **spec}), None).id

    def job(self, job_id: int) -> dict:
        response = self.api.get(f"/v1/jobs/{job_id}")
        assert response.status_code == 200, response.text
        return response.json()

    def state(self, job_id: int) -> str:
        return str(self.job(job_id)["state"])

    def wait(self, job_id: int, *states: str) -> dict:
        tick_until(self.service, lambda: self.state(job_id) in states,
                   what=f"job {job_id} to be {' or '.join(states)}")
        return self.job(job_id)


@contextlib.contextmanager
def serve(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **jobs: Any) -> Iterator[Server]:
    """The server (its `jobs` config section with `jobs`); afterwards, whatever a failed
    test left queued or running is cancelled and waited for."""
    account = unix.unix_account
    monkeypatch.setattr(unix, "unix_account",
                        lambda name: account(ME if name == "light" else name))
    now = [T0]
    service = make_service(tmp_path / "s", mode="multi-user", clock=lambda: now[0],
                           jobs={"cancel_grace_seconds": 30, **jobs})
    service.accounts.add_user(ME)  # so that the test's user may have a quota
    if os.geteuid() != 0:
        service.accounts.add_member("admins", ME)  # for quotas and draining
    gates = tmp_path / "gates"
    gates.mkdir()
    with TestClient(AsPeer(create_app(service)), base_url="http://nai") as api:
        yield Server(service, api, now, gates)
        api.put("/v1/drain", json={"drained": False})
        admin = Caller(ME, uid=os.getuid(), admin=True)
        for job in service.runtime.jobs.hot():
            if not job.terminal:
                service.jobs.cancel(admin, job.id)
        tick_until(service, lambda: not service.busy(), what="every job to end")
    service.close()

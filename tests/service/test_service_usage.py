"""Services' replicas are charged to their owner as jobs are: the GPU time a replica
held lowers its owner's fair-share standing and counts against their `gpu_hours`
quota, and a restarted daemon neither forgets it nor charges it twice.

A replica is given to the job tick as the supervisor gives it (`held_elsewhere`: a
running job that never ends), on a clock the test moves."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from nai_server.api.app import create_app
from nai_server.app.accounts import Caller
from nai_server.app.service_gpus import SERVICE_ID_BASE
from nai_server.app.use_cases import UseCases
from nai_server.core.fairshare import accrue, decay
from nai_server.core.sched_types import RunningJob
from nai_server.core.spec import spec_from_dict
from nai_server.host import unix
from nai_server.testing import AsPeer, make_service, tick_until

ME = unix.user_name(os.getuid()) or str(os.getuid())
T0 = 1_700_000_000.0
HOUR = 3600.0
ENDED = {"succeeded", "failed", "cancelled", "timed_out", "lost"}


@dataclass
class Server:
    """A multi-user service with three fake GPUs, its API as the test's user, its
    clock, and the replicas holding GPUs (what the supervisor would report)."""

    service: UseCases
    api: TestClient
    now: list[float]
    replicas: list[RunningJob]

    def serve(self, gpus: tuple[int, ...], started_at: float, run: int = 1) -> None:
        self.replicas.append(replica(started_at, gpus, run))

    def row(self) -> dict:
        rows = self.api.get("/v1/usage").json()["rows"]
        return next(r for r in rows if r["kind"] == "user" and r["name"] == ME)

    def submit_as(self, user: str, command: str, **spec: object) -> int:
        caller = Caller(user, uid=os.getuid(), admin=user == ME)
        return self.service.jobs.submit(
            caller, spec_from_dict({"command": command, **spec}), None
        ).id

    def job(self, job_id: int) -> dict:
        return self.api.get(f"/v1/jobs/{job_id}").json()


def replica(
    started_at: float, gpus: tuple[int, ...] = (0, 1), run: int = 1, group: str | None = None
) -> RunningJob:
    """A replica of the test user's service holding ``gpus`` (as the supervisor says)."""
    return RunningJob(
        id=SERVICE_ID_BASE + 4096 + run,
        user=ME,
        group=group,
        gpus=gpus,
        started_at=started_at,
        time_limit=None,
        preemptible=False,
    )


def an_hour_held(state_dir: Path, now: list[float], replicas: list[RunningJob]) -> float:
    """A daemon whose replicas hold their GPUs for an hour (the test user has a quota,
    so their hours count), then stops; the half-life it charged with."""
    first = start(state_dir, now, replicas)
    first.accounts.add_user(ME)
    first.accounts.store.update_user(ME, {"quota": {"gpu_hours": 100, "period_days": 7}})
    half_life = first.runtime.tuning.half_life
    first.tick()
    now[0] += HOUR
    first.tick()
    first.close()
    return half_life


def start(state_dir: Path, now: list[float], replicas: list[RunningJob]) -> UseCases:
    service = make_service(state_dir, mode="multi-user", gpus=3, clock=lambda: now[0])
    service.runtime.held_elsewhere = lambda: list(replicas)
    return service


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    account = unix.unix_account
    monkeypatch.setattr(unix, "unix_account", lambda name: account(ME if name == "light" else name))
    now, replicas = [T0], []
    service = start(tmp_path / "s", now, replicas)
    if service.accounts.store.get_user(ME) is None:
        service.accounts.add_user(ME)  # so that the test's user may have a quota
    if os.geteuid() != 0:
        service.accounts.add_member("admins", ME)
    with TestClient(AsPeer(create_app(service)), base_url="http://nai") as api:
        yield Server(service, api, now, replicas)
        replicas.clear()
        for job in api.get("/v1/jobs").json()["jobs"]:  # whatever a failed test left
            if job["state"] not in ENDED:
                api.delete(f"/v1/jobs/{job['id']}")
        tick_until(service, lambda: not service.busy(), what="every job to end")
    service.close()


def test_a_replicas_gpu_hours_are_its_owners_usage_and_lower_their_standing(server: Server) -> None:
    server.api.put(f"/v1/users/{ME}/quota", json={"gpu_hours": 100, "period_days": 1})
    server.serve((0, 1), started_at=T0)
    server.service.tick()
    server.now[0] += HOUR
    row = server.row()
    half_life = server.service.runtime.tuning.half_life
    assert row["gpus_in_use"] == 2
    assert row["used_gpu_hours"] == pytest.approx(2.0)
    assert row["usage_gpu_hours"] == pytest.approx(accrue(0.0, 2, HOUR, half_life) / HOUR)
    assert row["standing"] == 1.0  # all the use there is is theirs
    # One GPU left: the owner's job waits behind a user who used none, though it
    # was submitted first.
    mine = server.submit_as(ME, "sleep 30", gpus=1)
    theirs = server.submit_as("light", "true", gpus=1)
    server.service.tick()
    assert server.job(theirs)["state"] != "queued"
    assert server.job(mine)["state"] == "queued"


def test_a_gpu_hours_quota_used_up_by_a_service_holds_the_owners_next_job(server: Server) -> None:
    server.api.put(f"/v1/users/{ME}/quota", json={"gpu_hours": 2, "period_days": 1})
    server.serve((0, 1), started_at=T0)
    server.service.tick()
    server.now[0] += HOUR + 1
    server.service.tick()
    server.replicas.clear()  # the service scaled to zero: its GPUs are free again
    server.service.tick()
    job = server.submit_as(ME, "true", gpus=1)
    server.service.tick()
    assert server.job(job)["reason"] == "QuotaHours"
    assert server.row()["used_gpu_hours"] == pytest.approx(2.0 + 2 / HOUR)


def usage_row(service: UseCases) -> dict:
    with TestClient(AsPeer(create_app(service)), base_url="http://nai") as api:
        rows = api.get("/v1/usage").json()["rows"]
    return next(r for r in rows if r["kind"] == "user" and r["name"] == ME)


def test_a_restart_neither_forgets_nor_double_charges_a_replica(tmp_path: Path) -> None:
    now: list[float] = [T0]
    replicas = [replica(T0)]
    half_life = an_hour_held(tmp_path / "s", now, replicas)

    # Down for an hour, the replica kept running (re-adopted): 2 hours of 2 GPUs.
    now[0] += HOUR
    second = start(tmp_path / "s", now, replicas)
    second.tick()
    book = second.runtime.usage
    assert book.usage[f"user:{ME}"] == pytest.approx(accrue(0.0, 2, 2 * HOUR, half_life))
    now[0] += HOUR
    replicas.clear()  # it let its GPUs go after 3 hours
    second.tick()
    expected = accrue(0.0, 2, 3 * HOUR, half_life)
    assert book.usage[f"user:{ME}"] == pytest.approx(expected)
    second.close()

    now[0] += HOUR
    third = start(tmp_path / "s", now, replicas)
    row = usage_row(third)
    assert row["used_gpu_hours"] == pytest.approx(6.0)  # its ended run, remembered
    assert row["usage_gpu_hours"] == pytest.approx(decay(expected, HOUR, half_life) / HOUR)
    third.close()


def test_a_replica_held_before_replicas_were_charged_is_charged_from_its_start(
    tmp_path: Path,
) -> None:
    """A daemon of the version before kept no record of replicas: a replica running
    when this one starts was never charged."""
    now: list[float] = [T0]
    replicas = [replica(T0 - HOUR)]
    service = start(tmp_path / "s", now, replicas)
    service.tick()
    half_life = service.runtime.tuning.half_life
    assert service.runtime.usage.usage[f"user:{ME}"] == pytest.approx(
        accrue(0.0, 2, HOUR, half_life)
    )
    service.close()


def test_a_replica_gone_across_a_restart_is_charged_until_last_seen(tmp_path: Path) -> None:
    """The daemon stopped, and its replica ended, before the next saw it go: charged
    up to when its usage was last saved, not through the time the daemon was down."""
    now: list[float] = [T0]
    replicas = [replica(T0)]
    half_life = an_hour_held(tmp_path / "s", now, replicas)

    replicas.clear()
    now[0] += HOUR
    second = start(tmp_path / "s", now, replicas)
    row = usage_row(second)
    assert row["used_gpu_hours"] == pytest.approx(2.0)
    assert row["usage_gpu_hours"] == pytest.approx(
        decay(accrue(0.0, 2, HOUR, half_life), HOUR, half_life) / HOUR
    )
    second.close()


def test_a_group_services_gpu_time_is_charged_to_the_group_too(tmp_path: Path) -> None:
    now: list[float] = [T0]
    replicas = [replica(T0, (0,), group="lab")]
    service = start(tmp_path / "s", now, replicas)
    service.tick()
    now[0] += HOUR
    service.tick()
    half_life = service.runtime.tuning.half_life
    assert service.runtime.usage.usage["group:lab"] == pytest.approx(
        accrue(0.0, 1, HOUR, half_life)
    )
    service.close()


def test_a_replica_seen_gone_for_a_pass_and_back_is_not_charged_twice(server: Server) -> None:
    """A replica the supervisor did not report for one pass (a poll of Slurm that missed
    it) and then reports again, same start: its hours count once."""
    server.api.put(f"/v1/users/{ME}/quota", json={"gpu_hours": 100, "period_days": 1})
    server.serve((0, 1), started_at=T0)
    server.service.tick()
    server.now[0] += HOUR
    server.service.tick()
    kept = list(server.replicas)
    server.replicas.clear()
    server.now[0] += 1
    server.service.tick()
    server.replicas.extend(kept)
    server.now[0] += HOUR - 1
    server.service.tick()
    assert server.row()["used_gpu_hours"] == pytest.approx(4.0)  # 2 GPUs for 2 hours


def test_the_saved_runs_of_replicas_that_came_and_went_stay_bounded(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A service that crash-loops ends a run every few seconds; what the daemon keeps of
    them (written with every commit) stays within MAX_SERVICE_RUNS."""
    from nai_server.app import usage

    monkeypatch.setattr(usage, "MAX_SERVICE_RUNS", 5)
    server.api.put(f"/v1/users/{ME}/quota", json={"gpu_hours": 100, "period_days": 1})
    for run in range(1, 12):
        server.serve((0,), started_at=server.now[0], run=run)
        server.service.tick()
        server.now[0] += 10
        server.replicas.clear()
        server.service.tick()
    book = server.service.runtime.usage
    assert len(book.store.get_setting(usage.SERVICE_RUNS)) == 5
    assert server.row()["used_gpu_hours"] == pytest.approx(11 * 10 / HOUR)  # all still counted

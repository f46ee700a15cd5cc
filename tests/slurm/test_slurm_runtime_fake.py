"""The Slurm run loop against a scripted Slurm (no cluster): states Slurm reaches that
the real test cluster cannot easily show — a requeue, an unanswered sacct, TIMEOUT."""

from __future__ import annotations

import getpass
import threading
import time
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from nai_server.api.app import create_app
from nai_server.app.accounts import Caller
from nai_server.app.use_cases import UseCases
from nai_server.core.sched_types import Resources
from nai_server.core.spec import spec_from_dict
from nai_server.core.states import JobState
from nai_server.host.launchers.slurm import SlurmError
from nai_server.host.launchers.slurm_text import SlurmJob
from nai_server.protocol import Invalid
from nai_server.testing import AsPeer, make_service, upload_tree, wait_for


class ScriptedSlurm:
    """Slurm's answers as the test sets them."""

    def __init__(self) -> None:
        self.queue: dict[int, SlurmJob] = {}  # what squeue shows
        self.accounting: dict[int, SlurmJob] = {}  # what sacct shows
        self.sacct_fails = False
        self.asked: list[tuple[list[int], list[str]]] = []  # each squeue's ids and names
        self.since: list[float | None] = []  # each sacct's bound in time
        self.scontrol: dict[int, int] = {}  # exit codes `scontrol show job` tells
        self.submitted: list[list[str]] = []
        self.cancelled: list[tuple[int, str | None]] = []
        self.lock = threading.Lock()  # sbatch may be called from several threads
        self.together: threading.Barrier | None = None  # submits that must overlap

    def submit(self, argv: list[str], script: str, env: dict[str, str]) -> int:
        if self.together is not None:
            self.together.wait()
        with self.lock:
            self.submitted.append(argv)
            slurm_id = 100 + len(self.submitted)
            name = next(a.split("=", 1)[1] for a in argv if a.startswith("--job-name="))
            self.queue[slurm_id] = SlurmJob(slurm_id, name, 0, "PENDING", reason="Priority")
        return slurm_id

    def jobs(self, slurm_ids: list[int] = (), names: list[str] = ()) -> dict[int, SlurmJob]:  # type: ignore[assignment]
        """squeue, asked for these jobs (without a filter: all of them)."""
        self.asked.append((list(slurm_ids), list(names)))
        if not slurm_ids and not names:
            return dict(self.queue)
        return {i: j for i, j in self.queue.items() if i in slurm_ids or j.name in names}

    def ended(self, slurm_ids: list[int], since: float | None = None) -> dict[int, SlurmJob]:
        self.since.append(since)
        if self.sacct_fails:
            raise SlurmError("sacct failed (exit 1): Slurm accounting storage is disabled")
        return {i: self.accounting[i] for i in slurm_ids if i in self.accounting}

    def exit_codes(self, slurm_ids: list[int]) -> dict[int, int]:
        return {i: self.scontrol[i] for i in slurm_ids if i in self.scontrol}

    def cancel(self, slurm_id: int, signal: str | None = None) -> None:
        self.cancelled.append((slurm_id, signal))

    def partitions(self) -> str:
        """`scontrol show partition -o`: none (a replica asks for UNLIMITED)."""
        return ""

    def set(self, slurm_id: int, state: str, **fields: object) -> None:
        job = self.queue[slurm_id]
        self.queue[slurm_id] = SlurmJob(slurm_id, job.name, job.uid, state, **fields)  # type: ignore[arg-type]


@pytest.fixture
def service(tmp_path: Path) -> UseCases:
    made = make_service(tmp_path / "state", mode="personal", gpus=0, launcher="slurm",
                        slurm={"poll_seconds": 1e-6})
    made.runtime.slurm = made.services.host.slurm = ScriptedSlurm()  # type: ignore[attr-defined]
    return made


def _job(service: UseCases, job_id: int) -> tuple[JobState, str | None, int]:
    service.tick()
    with service.lock:
        job = service.runtime.jobs.get(job_id)
    assert job is not None
    return job.state, job.message, len(job.runs)


def test_requeue_unanswered_sacct_and_timeout(service: UseCases) -> None:
    slurm: ScriptedSlurm = service.runtime.slurm  # type: ignore[attr-defined]
    job_id = service.jobs.submit(Caller("root", uid=0, admin=True),
                                 spec_from_dict({"command": "train", "gpus": 2}), None).id
    service.tick()
    (slurm_id,) = slurm.queue
    assert any(a == "--gres=gpu:2" for a in slurm.submitted[0])
    service.tick()
    assert service.runtime.state.waiting[job_id] == "Priority"  # Slurm's reason, shown

    slurm.set(slurm_id, "RUNNING", start=time.time(), nodes="n1")
    assert _job(service, job_id)[0] == JobState.RUNNING
    # Slurm requeued it (a node failed, or preemption with requeue): nai's queue again,
    # the same Slurm job, which runs again later.
    slurm.set(slurm_id, "PENDING", reason="BeginTime")
    state, message, runs = _job(service, job_id)
    assert (state, runs) == (JobState.QUEUED, 1) and "preempted" in (message or "")
    assert service.runtime.state.waiting[job_id] == "BeginTime"
    slurm.set(slurm_id, "RUNNING", start=time.time(), nodes="n2")
    assert _job(service, job_id)[0] == JobState.RUNNING
    assert len(slurm.submitted) == 1

    # squeue forgot it and sacct does not answer: nothing is concluded.
    del slurm.queue[slurm_id]
    slurm.sacct_fails = True
    for _ in range(5):
        assert _job(service, job_id)[0] == JobState.RUNNING
    slurm.sacct_fails = False
    slurm.accounting[slurm_id] = SlurmJob(slurm_id, "x", 0, "TIMEOUT", exit_code=0,
                                          end=time.time())
    wait_for(lambda: _job(service, job_id)[0] == JobState.TIMED_OUT,
             what="the job to end as Slurm's TIMEOUT")
    assert len(slurm.submitted) == 1


def test_a_job_slurm_lost_ends_lost_and_a_cancel_goes_to_slurm(service: UseCases) -> None:
    slurm: ScriptedSlurm = service.runtime.slurm  # type: ignore[attr-defined]
    root = Caller("root", uid=0, admin=True)
    lost, cancelled = (service.jobs.submit(root, spec_from_dict({"command": "x"}), None).id
                       for _ in range(2))
    service.tick()
    # Submitted at once: which Slurm job is which nai job is in their names.
    by_job = {int(j.name.split("-")[2]): i for i, j in slurm.queue.items()}
    first, second = by_job[lost], by_job[cancelled]
    for slurm_id in (first, second):
        slurm.set(slurm_id, "RUNNING", start=time.time())
    assert _job(service, lost)[0] == JobState.RUNNING
    slurm.set(first, "NODE_FAIL", exit_code=None, end=time.time())
    wait_for(lambda: _job(service, lost)[0] == JobState.LOST, what="NODE_FAIL to be lost")

    service.jobs.cancel(root, cancelled)
    assert slurm.cancelled == [(second, "TERM")]  # SIGTERM now, through Slurm
    slurm.set(second, "FAILED", exit_code=143, end=time.time())
    wait_for(lambda: _job(service, cancelled)[0] == JobState.CANCELLED,
             what="the cancelled job to end cancelled")


def test_a_burst_of_jobs_is_submitted_several_at_once(service: UseCases) -> None:
    """Each sbatch waits for slurmctld: a burst's submits overlap rather than queue up
    behind one another (here each waits until four are under way at once)."""
    slurm: ScriptedSlurm = service.runtime.slurm  # type: ignore[attr-defined]
    slurm.together = threading.Barrier(4, timeout=10)
    root = Caller("root", uid=0, admin=True)
    ids = [service.jobs.submit(root, spec_from_dict({"command": "true"}), None).id
           for _ in range(4)]
    service.tick()
    assert len(slurm.submitted) == 4
    assert [_job(service, i)[0] for i in ids] == [JobState.QUEUED] * 4
    assert sorted(service.runtime.state.waiting[i] for i in ids) == ["Priority"] * 4
    # And their ends: outputs are collected more than two at a time (a helper each).
    assert service.runtime.collections.lanes.per_key > 2


def test_a_server_without_slurm_refuses_several_nodes(tmp_path: Path) -> None:
    local = make_service(tmp_path / "state", mode="personal", gpus=2)
    with pytest.raises(Invalid, match="nodes: 2 needs a server that runs jobs on Slurm"):
        local.jobs.submit(Caller("root", uid=0, admin=True),
                          spec_from_dict({"command": "x", "nodes": 2}), None)


def test_the_poll_asks_slurm_for_this_daemons_jobs_only(service: UseCases) -> None:
    """A cluster's queue holds everyone's jobs: each poll asks squeue for the Slurm ids
    of this daemon's jobs (and the names of those killed mid-submit), never the whole
    queue, and a job nai cancelled while Slurm still held it is watched until Slurm
    ends it."""
    slurm: ScriptedSlurm = service.runtime.slurm  # type: ignore[attr-defined]
    foreign = SlurmJob(7, "someone-elses", 1234, "RUNNING", start=time.time(), nodes="n1")
    slurm.queue[7] = foreign
    root = Caller("root", uid=0, admin=True)
    kept, cancelled = (service.jobs.submit(root, spec_from_dict({"command": "x"}), None).id
                       for _ in range(2))
    service.tick()
    by_job = {int(j.name.split("-")[2]): i for i, j in slurm.queue.items() if i != 7}
    slurm.set(by_job[kept], "RUNNING", start=time.time(), nodes="n1")
    assert _job(service, kept)[0] == JobState.RUNNING
    assert 7 not in service.runtime.view  # type: ignore[attr-defined]
    assert slurm.asked and all(7 not in ids for ids, _ in slurm.asked)
    assert {i for ids, _ in slurm.asked for i in ids} == set(by_job.values())

    service.jobs.cancel(root, cancelled)  # still pending in Slurm
    wait_for(lambda: (by_job[cancelled], None) in slurm.cancelled or service.tick(),
             what="the cancelled job's Slurm job to be cancelled")
    slurm.set(by_job[cancelled], "CANCELLED", end=time.time())
    service.tick()
    slurm.asked.clear()
    service.tick()
    assert slurm.asked == [([by_job[kept]], [])]  # no longer the ended one's

    # Its end: sacct is asked for its exit code, no further back than nai's submit.
    slurm.set(by_job[kept], "COMPLETED", end=time.time())
    slurm.accounting[by_job[kept]] = SlurmJob(by_job[kept], "x", 0, "COMPLETED", exit_code=0,
                                              end=time.time())
    wait_for(lambda: _job(service, kept)[0] == JobState.SUCCEEDED, what="the job to end")
    with service.lock:
        submitted_at = service.runtime.jobs.get(kept).submitted_at  # type: ignore[union-attr]
    assert slurm.since and all(s == submitted_at for s in slurm.since)


def test_an_ended_job_waits_for_its_exit_code_then_takes_slurmctlds(service: UseCases) -> None:
    """squeue's text has no exit codes: with accounting silent, a job Slurm calls
    COMPLETED or FAILED stays running in nai until `scontrol show job` tells its code."""
    slurm: ScriptedSlurm = service.runtime.slurm  # type: ignore[attr-defined]
    job_id = service.jobs.submit(Caller("root", uid=0, admin=True),
                                 spec_from_dict({"command": "x"}), None).id
    service.tick()
    (slurm_id,) = slurm.queue
    slurm.set(slurm_id, "RUNNING", start=time.time())
    assert _job(service, job_id)[0] == JobState.RUNNING
    slurm.sacct_fails = True
    slurm.set(slurm_id, "FAILED", start=time.time(), end=time.time())  # no exit code
    for _ in range(3):
        assert _job(service, job_id)[0] == JobState.RUNNING
    slurm.scontrol[slurm_id] = 3
    wait_for(lambda: _job(service, job_id)[0] == JobState.FAILED, what="the job to fail")
    with service.lock:
        assert service.runtime.jobs.get(job_id).exit_code == 3  # type: ignore[union-attr]


def test_gpus_that_slurm_runs_jobs_and_replicas_on_are_their_owners_in_use(
        service: UseCases) -> None:
    """nai places nothing on Slurm, yet a user's job and service replica that Slurm
    runs hold GPUs: /v1/usage counts them (a job's on each of its nodes), and so does a
    plan's quota count, as on one server. Pending in Slurm, they hold none."""
    slurm: ScriptedSlurm = service.runtime.slurm  # type: ignore[attr-defined]
    api = TestClient(AsPeer(create_app(service)), base_url="http://nai")
    me = getpass.getuser()
    assert api.post("/v1/users", json={"name": me}).status_code == 201
    assert api.put(f"/v1/users/{me}/quota", json={"max_gpus": 8}).status_code == 200
    job = api.post("/v1/jobs", json={"spec": {"command": "train", "gpus": 2, "nodes": 2}})
    assert job.status_code == 201, job.text
    tree = upload_tree(api, {"predict.py": b"def predict(inputs):\n    return inputs\n"})
    assert api.post("/v1/models", json={"name": "m", "tree_id": tree}).status_code == 201
    made = api.post("/v1/services", json={"name": "s", "model": "m@1", "gpus": 1})
    assert made.status_code == 201, made.text

    def step() -> int:
        """The run loop's tick and the supervisor's step; the GPUs /v1/usage says I use."""
        service.tick()
        service.services.life.step()
        service.tick()
        rows = api.get("/v1/usage").json()["rows"]
        return int(next(r["gpus_in_use"] for r in rows if r["name"] == me))

    assert step() == 0 and step() == 0  # the replica is added, then submitted
    assert len(slurm.queue) == 2 and all(j.state == "PENDING" for j in slurm.queue.values())
    [job_slurm] = [i for i, j in slurm.queue.items() if "-svc-" not in j.name]
    [replica_slurm] = [i for i in slurm.queue if i != job_slurm]
    assert step() == 0  # both pending in Slurm: nothing held yet
    slurm.set(job_slurm, "RUNNING", start=time.time(), nodes="n[1-2]")
    assert step() == 4  # 2 GPUs on each of its 2 nodes
    slurm.set(replica_slurm, "RUNNING", start=time.time(), nodes="n3")
    assert step() == 5
    with service.lock:
        _, cluster, accounting = service.runtime.plan_inputs(time.time(),
                                                             service.runtime.jobs.hot())
    assert Resources(cluster, time.time(), accounting).held == {f"user:{me}": 5}


def _as_me(service: UseCases, quota: dict[str, float]) -> tuple[TestClient, str]:
    """The API as this test's user, registered with this quota."""
    api = TestClient(AsPeer(create_app(service)), base_url="http://nai")
    me = getpass.getuser()
    assert api.post("/v1/users", json={"name": me}).status_code == 201
    assert api.put(f"/v1/users/{me}/quota", json=quota).status_code == 200
    return api, me


def _submit(api: TestClient, **spec: object) -> int:
    made = api.post("/v1/jobs", json={"spec": {"command": "train", **spec}})
    assert made.status_code == 201, made.text
    return int(made.json()["id"])


def _reason(api: TestClient, job_id: int) -> str | None:
    return api.get(f"/v1/jobs/{job_id}").json()["reason"]  # type: ignore[no-any-return]


def _slurm_id(slurm: ScriptedSlurm, job_id: int) -> int:
    (found,) = (i for i, j in slurm.queue.items() if j.name.split("-")[2] == str(job_id))
    return found


def test_max_gpus_holds_a_job_in_nais_queue_until_the_owners_slurm_jobs_end(
        service: UseCases) -> None:
    """A job that would take its owner past max_gpus is not handed to Slurm, which
    would run it whatever nai's quota: it waits in nai's queue as on one server
    (QuotaGPUs), counting the GPUs of the owner's jobs Slurm holds pending as well as
    those it runs, and goes once enough of them have ended. Jobs behind it that fit go."""
    slurm: ScriptedSlurm = service.runtime.slurm  # type: ignore[attr-defined]
    api, _ = _as_me(service, {"max_gpus": 5})
    wide = _submit(api, gpus=2, nodes=2)  # 4 GPUs on Slurm's nodes
    held = _submit(api, gpus=2)  # 4 + 2 > 5
    small = _submit(api, gpus=1)  # 4 + 1: fits
    cpu = _submit(api, gpus=0)  # no GPUs: no quota
    service.tick()
    service.tick()
    assert len(slurm.submitted) == 3
    assert [_reason(api, i) for i in (wide, held, small, cpu)] == \
        ["Priority", "QuotaGPUs", "Priority", "Priority"]
    slurm.set(_slurm_id(slurm, wide), "RUNNING", start=time.time(), nodes="n[1-2]")
    for _ in range(3):  # running, as pending: still the owner's 4
        assert _job(service, wide)[0] == JobState.RUNNING
        assert _reason(api, held) == "QuotaGPUs"
    assert len(slurm.submitted) == 3

    ended = _slurm_id(slurm, wide)
    slurm.set(ended, "COMPLETED", start=time.time(), end=time.time())
    slurm.accounting[ended] = SlurmJob(ended, "x", 0, "COMPLETED", exit_code=0, end=time.time())
    wait_for(lambda: _job(service, wide)[0] == JobState.SUCCEEDED, what="the wide job to end")
    wait_for(lambda: len(slurm.submitted) == 4 or service.tick(),
             what="the held job to be submitted once the wide one ended")
    service.tick()
    assert _reason(api, held) == "Priority"  # Slurm's reason now


def test_slurm_jobs_gpu_time_is_charged_and_gpu_hours_hold_the_next(
        service: UseCases) -> None:
    """A job Slurm ran is charged for the GPUs it asked for on all its nodes, from
    Slurm's start to its end: it shows in `nai usage` (decayed, and against the
    gpu_hours quota), and once the quota is used up the next job waits (QuotaHours)
    instead of going to Slurm."""
    slurm: ScriptedSlurm = service.runtime.slurm  # type: ignore[attr-defined]
    api, me = _as_me(service, {"gpu_hours": 2.0, "period_days": 1})
    first = _submit(api, gpus=1, nodes=2)
    service.tick()
    slurm_id = _slurm_id(slurm, first)
    end = time.time()
    start = end - 3600  # an hour before the poll saw it: charged from Slurm's start
    slurm.set(slurm_id, "RUNNING", start=start, nodes="n[1-2]")
    assert _job(service, first)[0] == JobState.RUNNING
    slurm.set(slurm_id, "COMPLETED", start=start, end=end)
    slurm.accounting[slurm_id] = SlurmJob(slurm_id, "x", 0, "COMPLETED", exit_code=0, end=end)
    wait_for(lambda: _job(service, first)[0] == JobState.SUCCEEDED, what="the job to end")

    row = next(r for r in api.get("/v1/usage").json()["rows"] if r["name"] == me)
    assert row["used_gpu_hours"] == pytest.approx(2.0, abs=1e-3)  # 2 nodes x 1 GPU x 1 h
    assert row["usage_gpu_hours"] == pytest.approx(2.0, abs=0.01)  # decays slowly (7 days)
    second = _submit(api, gpus=1)
    cpu = _submit(api, gpus=0)
    for _ in range(3):
        service.tick()
        assert _reason(api, second) == "QuotaHours"
    assert len(slurm.submitted) == 2  # the first, and the CPU job: no GPU-hours
    assert _reason(api, cpu) == "Priority"
    assert api.put(f"/v1/users/{me}/quota", json={"gpu_hours": 3.0}).status_code == 200
    wait_for(lambda: len(slurm.submitted) == 3 or service.tick(),
             what="the job to be submitted once the quota allows it")


def test_the_usage_book_follows_slurms_jobs_every_tick_with_nothing_to_submit(
        service: UseCases) -> None:
    """With nothing waiting to go to Slurm, the ticks still charge the jobs it runs: a
    job that ended while none was ready would otherwise be archived before any pass of
    the book saw it, and never count against its owner's share or quota."""
    slurm: ScriptedSlurm = service.runtime.slurm  # type: ignore[attr-defined]
    api, me = _as_me(service, {})
    job_id = _submit(api, gpus=2)
    service.tick()  # handed to Slurm: from now on, nothing is ready
    slurm_id = _slurm_id(slurm, job_id)
    end = time.time()
    slurm.set(slurm_id, "RUNNING", start=end - 3600, nodes="n1")
    assert _job(service, job_id)[0] == JobState.RUNNING
    slurm.set(slurm_id, "COMPLETED", start=end - 3600, end=end)
    slurm.accounting[slurm_id] = SlurmJob(slurm_id, "x", 0, "COMPLETED", exit_code=0, end=end)
    wait_for(lambda: _job(service, job_id)[0] == JobState.SUCCEEDED, what="the job to end")
    service.tick()
    with service.lock:  # no /v1/usage call, which would bring the book up to date itself
        charged = service.runtime.usage.usage.get(f"user:{me}", 0.0)
    assert charged == pytest.approx(2 * 3600, rel=0.01)  # 2 GPUs for an hour, barely decayed

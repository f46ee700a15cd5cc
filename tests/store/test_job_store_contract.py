"""What every JobStore promises (app.ports), checked against the TinyDB store and the
in-memory one alike: typed records in and out, ids that never repeat, updates that
merge, copies that callers cannot edit behind the store's back, archived jobs still
found by id, and values that must serialise."""

from __future__ import annotations

import dataclasses
import errno
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from nai_server.app.ports import JobStore
from nai_server.core.job import Job, Pin, Run, Stop
from nai_server.core.spec import JobSpec
from nai_server.core.states import JobState
from nai_server.store import atomic
from nai_server.store.atomic import CommitFailed, CommitLock, Unstorable
from nai_server.store.db import TinyDbStore
from nai_server.store.memory import MemoryJobStore

OCT = 1_792_000_000.0  # 2026-10


@pytest.fixture(params=["tinydb", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobStore]:
    if request.param == "tinydb":
        db = TinyDbStore(tmp_path / "state")
        yield db
        db.close()
    else:
        yield MemoryJobStore()


def queued(user: str = "alice", **spec: object) -> Job:
    return Job(id=0, user=user, state=JobState.QUEUED,
               spec=JobSpec(command="true", **spec),  # type: ignore[arg-type]
               submitted_at=OCT)


def test_both_stores_are_job_stores(store: JobStore) -> None:
    assert isinstance(store, JobStore)


def test_insert_hands_out_increasing_ids_and_returns_the_record(store: JobStore) -> None:
    first = store.next_job_id()
    a = store.insert(queued(name="a", gpus=2, after=(7,)))
    b = store.insert(queued("bob"))
    assert (a.id, b.id) == (first, first + 1) and store.next_job_id() == first + 2
    got = store.get(a.id)
    assert got == a and got is not None
    assert got.spec.gpus == 2 and got.spec.after == (7,) and got.name == "a"
    assert got.state is JobState.QUEUED and got.user == "alice"
    assert {j.id for j in store.hot()} == {a.id, b.id}


def test_defaults_come_from_the_record_not_the_caller(store: JobStore) -> None:
    job = store.insert(queued())
    assert job.spec.gpus == 1 and job.spec.priority == "normal"
    assert job.spec.after_ok == () and job.spec.preemptible is False
    assert job.gpus == () and job.pid is None and job.pid_start == -1
    assert job.stop is None and job.runs == () and job.attained == 0.0
    assert job.name == f"job-{job.id}"


def test_update_merges_typed_fields_and_round_trips(store: JobStore) -> None:
    job = store.insert(queued(gpus=2))
    pin = Pin("data", 3, "a" * 64)
    after = store.update(job.id, state=JobState.RUNNING, gpus=(0, 1), gpu_uuids=("u0", "u1"),
                         pid=1234, pid_start=99, started_at=OCT + 5, dataset=pin)
    assert after.state is JobState.RUNNING and after.gpus == (0, 1) and after.pid == 1234
    assert after.spec == job.spec and after.submitted_at == job.submitted_at
    stop = Stop(JobState.PREEMPTED, at=OCT + 9, deadline=OCT + 39, for_job=8)
    store.update(job.id, stop=stop, runs=(Run(OCT, OCT + 5, 2),), attained=5.0)
    got = store.get_hot(job.id)
    assert got is not None and got.stop == stop and got.runs == (Run(OCT, OCT + 5, 2),)
    assert got.dataset == pin and got.attained == 5.0 and got.pid_start == 99
    cleared = store.update(job.id, stop=None, pid=None, gpus=())
    assert cleared.stop is None and cleared.pid is None and cleared.gpus == ()


def test_records_cannot_be_edited_behind_the_stores_back(store: JobStore) -> None:
    job = store.insert(queued(env={"A": "1"}))
    got = store.get(job.id)
    assert got is not None
    with pytest.raises(dataclasses.FrozenInstanceError):
        got.state = JobState.FAILED  # type: ignore[misc]
    with pytest.raises(TypeError):
        got.spec.env["A"] = "changed"  # type: ignore[index]
    again = store.get(job.id)
    assert again is not None and again.spec.env == {"A": "1"}


def test_hot_sees_every_change(store: JobStore) -> None:
    a, b = store.insert(queued()), store.insert(queued())
    assert [j.state for j in store.hot()] == [JobState.QUEUED] * 2
    store.update(a.id, state=JobState.STARTING, gpus=(1,))
    by_id = {j.id: j for j in store.hot()}
    assert by_id[a.id].state is JobState.STARTING and by_id[a.id].gpus == (1,)
    assert by_id[b.id] == b
    store.update(a.id, state=JobState.RUNNING)
    assert {j.id: j.state for j in store.hot()} == {a.id: JobState.RUNNING,
                                                     b.id: JobState.QUEUED}


def test_hot_keeps_the_record_of_a_job_whose_document_did_not_change(
        store: JobStore) -> None:
    """Records are shared between reads (the tick reads the whole queue every time):
    a write, to another job or not to a job at all, leaves the others' records be."""
    a, b = store.insert(queued()), store.insert(queued())
    first = {j.id: j for j in store.hot()}
    assert {j.id: j for j in store.hot()} == first
    store.update(a.id, pid=7)
    store.set_setting("unrelated", 1)
    second = {j.id: j for j in store.hot()}
    assert second[b.id] is first[b.id]
    assert second[a.id].pid == 7 and first[a.id].pid is None


def test_hot_forgets_what_a_failed_commit_threw_away(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A change read back before its flush failed is gone from the next read."""
    lock = CommitLock()
    store = TinyDbStore(tmp_path / "state", lock)
    with lock:
        job = store.insert(queued())
    assert [j.state for j in store.hot()] == [JobState.QUEUED]

    def disk_full(path: Path, data: bytes, mode: int = 0o600) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic, "atomic_write", disk_full)
    monkeypatch.setattr(os, "fdatasync", lambda fd: disk_full(Path(), b""))  # journal
    with pytest.raises(CommitFailed), lock:
        store.update(job.id, state=JobState.STARTING, gpus=(0,))
        before_the_flush = [j.state for j in store.hot()]
    monkeypatch.undo()
    assert before_the_flush == [JobState.STARTING]
    with lock:
        assert [(j.state, j.gpus) for j in store.hot()] == [(JobState.QUEUED, ())]
    store.close()


def test_unknown_fields_and_unstorable_values_are_refused(store: JobStore) -> None:
    job = store.insert(queued())
    with pytest.raises(TypeError, match="no field"):
        store.update(job.id, colour="blue")
    with pytest.raises(Unstorable):
        store.update(job.id, message=object())
    assert store.get(job.id) == job


def test_update_of_an_unknown_job_raises_key_error(store: JobStore) -> None:
    with pytest.raises(KeyError):
        store.update(store.next_job_id() + 5, message="x")
    assert store.get(store.next_job_id() + 5) is None


def test_archived_jobs_leave_the_hot_table_but_are_found(store: JobStore) -> None:
    done = store.insert(queued())
    store.update(done.id, state=JobState.CANCELLED, ended_at=OCT + 1, message="cancelled")
    live = store.insert(queued())
    assert store.archive_jobs([done.id], OCT + 2) == 1
    assert [j.id for j in store.hot()] == [live.id]
    assert store.get_hot(done.id) is None
    archived = store.get(done.id)
    assert archived is not None and archived.state is JobState.CANCELLED
    assert archived.message == "cancelled"
    # An id is never handed out again, even once its job left the hot table.
    assert store.insert(queued()).id == live.id + 1


def test_state_watchers_hear_each_change_of_state_once(store: JobStore) -> None:
    heard: list[tuple[str | None, str]] = []
    store.watch_states(lambda before, doc: heard.append((before, doc["state"])))
    job = store.insert(queued())
    store.update(job.id, pid=42)  # no state change: nothing heard
    store.update(job.id, state=JobState.STARTING)
    store.update(job.id, state=JobState.RUNNING, pid=43)
    assert heard == [("queued", "starting"), ("starting", "running")]

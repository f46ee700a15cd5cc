"""Questions over every job (fair-share usage worked out at load, who may read a tree
through a job, what store verify says a damaged tree breaks) are answered for
archived jobs from what the store keeps in memory: no archive file is read, so none
is read under the lock that submits and ticks need."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from nai_server.app.accounts import Caller
from nai_server.app.jobs import Jobs
from nai_server.app.tree_access import TreeAccess
from nai_server.app.usage import UsageBook, charge, runs_of
from nai_server.core.job import Job
from nai_server.store.atomic import CommitLock
from nai_server.store.db import TinyDbStore
from nai_server.store.history import ArchiveIndex
from nai_server.store.verify import references_in

T0 = 1_790_000_000.0
DAY = 86_400.0
CODE, OUT, OTHER = "a" * 64, "b" * 64, "c" * 64
TEAM_JOB = {"user": "alice", "group": "team", "state": "succeeded", "spec": {"gpus": 2},
            "code_tree": CODE, "output_tree": OUT, "submitted_at": T0 - 8000,
            "started_at": T0 - 3600, "ended_at": T0, "gpus": [0, 1],
            "runs": [[T0 - 7200, T0 - 5400, 1]], "exit_code": 0,
            "dataset": {"name": "d", "version": 1, "tree_id": OTHER}}
BOB = Caller("bob", uid=60_001, admin=False, groups=("team",))
EVE = Caller("eve", uid=60_002, admin=False)


def _team_job() -> Job:
    """TEAM_JOB as the store holds it (id 1)."""
    return Job.from_doc({**TEAM_JOB, "id": 1})


def _store(path: Path) -> tuple[TinyDbStore, CommitLock]:
    lock = CommitLock()
    store = TinyDbStore(path, lock)
    with lock:
        if store.next_job_id() == 1:
            store.insert_job(TEAM_JOB)
            store.insert_job({"user": "carol", "group": None, "state": "failed",
                              "spec": {"gpus": 1}, "code_tree": OTHER,
                              "submitted_at": T0, "started_at": T0, "ended_at": T0 + 60,
                              "gpus": [0]})
            store.archive_jobs([1, 2])
            store.insert_job({"user": "dave", "group": None, "state": "queued",
                              "spec": {"gpus": 1}, "code_tree": CODE, "submitted_at": T0})
    return store, lock


def _answers(store: TinyDbStore, lock: CommitLock) -> None:
    trees = TreeAccess(store, lock, None, Jobs.may_read)  # type: ignore[arg-type]
    assert trees.via_jobs(BOB, OUT) and trees.via_jobs(BOB, CODE)  # a group member
    assert not trees.via_jobs(EVE, OUT)
    assert trees.via_jobs(Caller("carol", 60_003, False), OTHER)
    assert set(trees._reachable_trees(BOB)) == {CODE, OUT}

    jobs, _ = references_in(store, lock)()
    assert [j["id"] for j in jobs] == [3, 2, 1]
    assert jobs[2]["output_tree"] == OUT and jobs[2]["dataset"]["tree_id"] == OTHER

    now = T0 + DAY
    with lock:  # as the tick asks: nothing saved yet, so worked out from every job
        usage = UsageBook(store, half_life=DAY).accounting(now, store.hot()).usage
    expected = charge({}, float("-inf"), runs_of(_team_job()), now, DAY)
    assert usage["user:alice"] == pytest.approx(expected["user:alice"])
    assert usage["group:team"] == pytest.approx(expected["group:team"])
    assert usage["user:carol"] > 0


def test_questions_over_every_job_read_no_archive(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    store, lock = _store(tmp_path)

    def no_archive_read(*_: Any, **__: Any) -> Any:
        raise AssertionError("an archive file was read")

    monkeypatch.setattr(TinyDbStore, "_archive", no_archive_read)
    monkeypatch.setattr(ArchiveIndex, "rows", no_archive_read)
    _answers(store, lock)
    store.close()
    # A restarted daemon has the same answers from the archives it scans as it opens.
    monkeypatch.undo()
    reopened, lock = _store(tmp_path)
    monkeypatch.setattr(TinyDbStore, "_archive", no_archive_read)
    monkeypatch.setattr(ArchiveIndex, "rows", no_archive_read)
    _answers(reopened, lock)
    reopened.close()


def test_a_job_archived_again_after_a_crash_is_indexed_once(tmp_path: Path) -> None:
    store, lock = _store(tmp_path)
    with lock:
        store._hot()["1"] = {**TEAM_JOB, "id": 1, "output_tree": None}  # the crash's hot copy
        store._write_hot()
        store.archive_jobs([1])
    assert store.archived_using(OUT) == []
    assert [j.id for j in store.archived_using(CODE)] == [1]
    assert [j.id for j in store.job_summaries()].count(1) == 1
    store.close()


def test_usage_at_load_leaves_out_jobs_that_ended_beyond_every_horizon(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Worked out with a 1-day half-life and no quota, a run a year old weighs nothing:
    its job is not even turned into a summary (with 100,000 archived jobs, most are)."""
    import nai_server.store.archiving as archiving

    store, lock = _store(tmp_path)
    with lock:
        old = store.insert_job({**TEAM_JOB, "started_at": T0 - 400 * DAY,
                                "ended_at": T0 - 399 * DAY, "runs": []})
        store.archive_jobs([old])
    summarised: list[int] = []

    def counted(fact: Any) -> Any:
        summarised.append(fact[0])
        return summary_of(fact)

    summary_of = archiving.summary_of
    monkeypatch.setattr(archiving, "summary_of", counted)
    with lock:
        usage = UsageBook(store, half_life=DAY).accounting(T0 + DAY, store.hot()).usage
    assert old not in summarised and 1 in summarised
    expected = charge({}, float("-inf"), runs_of(_team_job()), T0 + DAY, DAY)
    assert usage["user:alice"] == pytest.approx(expected["user:alice"])
    store.close()

"""The run-time predictions' bookkeeping stays the size of the hot job table: the ids
of jobs already learned from are kept only while those jobs are hot (an archived job
never comes back), and the archive's history is read once, before the first plan and
outside the scheduler's lock."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nai_server.app.run_times import RunTimes
from nai_server.core.job import Job, JobSummary
from nai_server.core.sched_types import Accounting
from nai_server.core.spec import spec_from_dict
from nai_server.core.states import JobState
from nai_server.testing import make_service


class Archive:
    def __init__(self) -> None:
        self.reads = 0

    def job_summaries(self, hot: list[Job] | None = None, *,
                      ended_after: float | None = None) -> Iterator[JobSummary]:
        self.reads += 1
        yield JobSummary(id=1, user="ada", state=JobState.SUCCEEDED, started_at=0.0,
                         ended_at=300.0)


def ended(job_id: int, ran: float) -> Job:
    return Job(id=job_id, user="ada", state=JobState.SUCCEEDED,
               spec=spec_from_dict({"command": "x"}), submitted_at=0.0, time_limit=3600,
               started_at=1000.0, ended_at=1000.0 + ran)


def test_only_hot_jobs_are_remembered_and_none_is_learned_twice() -> None:
    times = RunTimes(Archive())  # type: ignore[arg-type]
    two, three = ended(2, 360.0), ended(3, 360.0)
    learned = times.with_predictions(Accounting(), [two, three]).runtimes
    assert times.seen == {2, 3}  # not the archived job 1
    assert times.with_predictions(Accounting(), [three]).runtimes == learned
    assert times.seen == {3}  # job 2 was archived: it never comes back
    assert times.with_predictions(Accounting(), [three]).runtimes == learned
    assert times.with_predictions(Accounting(), []).runtimes == learned
    assert times.seen == set()


def test_the_archive_is_read_once_by_prime() -> None:
    archive = Archive()
    times = RunTimes(archive)  # type: ignore[arg-type]
    times.prime()
    assert archive.reads == 1
    times.prime()
    assert times.with_predictions(Accounting(), []).runtimes == {"user:ada": 300.0}
    times.prime()
    times.with_predictions(Accounting(), [])
    assert archive.reads == 1


def test_the_tick_reads_the_archive_outside_the_lock(tmp_path: Path) -> None:
    service = make_service(tmp_path / "s", mode="multi-user")
    try:
        runtime = service.runtime
        depths: list[int] = []
        real = runtime.run_times.store

        class Watched:
            def job_summaries(self, hot: Any = None, **kw: Any) -> Iterator[JobSummary]:
                depths.append(getattr(runtime.lock._local, "depth", 0))
                return real.job_summaries(hot, **kw)

        runtime.run_times.store = Watched()
        service.tick()
        service.tick()
        assert depths == [0]  # once, and not under the lock
    finally:
        service.close()

"""Run-time predictions learned from this server's finished jobs, for the scheduler's
accounting (`Accounting.runtimes`, see `core.predict`).

With them a queued job's `est_start` counts on the running jobs ending when their
users' jobs usually end rather than at their time limits, and `scheduler.predict`
plans on them. Learned from the job history once (the archived jobs' summaries, which
keep no time limit, so they teach the run times of jobs without one), then from each
job that ends, as it is first seen ended among the hot jobs. The history is read
before the first plan, outside the scheduler's lock (`RunTimes.prime`).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterable, Iterator
from typing import Protocol

from nai_server.core import predict
from nai_server.core.job import Job, JobSummary
from nai_server.core.sched_types import Accounting
from nai_server.core.states import JobState

# How a job ended that tells how long such jobs run (a cancelled or lost one does not).
RAN_OUT = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.TIMED_OUT})


class Summaries(Protocol):
    """Where the job history comes from (the store)."""

    def job_summaries(self, hot: list[Job] | None = None, *,
                      ended_after: float | None = None) -> Iterator[JobSummary]: ...


class RunTimes:
    """The predictions, learned from the store's history at first use and kept current
    from the jobs each tick sees."""

    def __init__(self, store: Summaries) -> None:
        self.store = store
        self.history: dict[str, tuple[float, ...]] = {}
        # The hot jobs already learned from (None: the history is not read yet). Only
        # hot ids are kept: an archived job never comes back to the hot set.
        self.seen: set[int] | None = None
        self.runtimes: dict[str, float] = {}
        self._archived: list[tuple[int, predict.Finished]] | None = None  # see `prime`
        self._reading = threading.Lock()  # `prime` against the first `with_predictions`

    def prime(self) -> None:
        """Read the archived jobs' history now, outside the scheduler's lock (a summary
        of every job ever archived, from memory: the tick calls this before it takes
        the lock, so that its first plan does not go through them under it). Nothing
        once the history is read."""
        with self._reading:
            if self.seen is None and self._archived is None:
                self._archived = _archived(self.store)

    def with_predictions(self, accounting: Accounting, hot: Iterable[Job]) -> Accounting:
        """`accounting` with the predictions, the hot jobs that ended since learned."""
        hot = list(hot)
        if self.seen is None:
            with self._reading:
                archived = self._archived if self._archived is not None else _archived(
                    self.store)
                self._archived, self.seen = None, set()
            self._learn(archived)
        seen = self.seen
        new = sorted((job for job in hot if job.state in RAN_OUT and job.id not in seen
                      and job.ended_at is not None), key=lambda job: job.ended_at or 0.0)
        self._learn([(job.id, predict.Finished(job.user, _job_ran(job), job.time_limit))
                     for job in new])
        self.seen = seen & {job.id for job in hot}  # not every job the daemon ever ended
        return dataclasses.replace(accounting, runtimes=self.runtimes)

    def _learn(self, finished: list[tuple[int, predict.Finished]]) -> None:
        if not finished:
            return
        assert self.seen is not None
        self.seen.update(job_id for job_id, _ in finished)
        self.history = predict.learn(self.history, (f for _, f in finished))
        self.runtimes = predict.runtimes(self.history)


def _archived(store: Summaries) -> list[tuple[int, predict.Finished]]:
    """What the archived jobs teach (no hot ones: those come from the hot set, with
    their limits), oldest end first."""
    ended = sorted((s for s in store.job_summaries([])
                    if s.state in RAN_OUT and s.ended_at is not None),
                   key=lambda s: s.ended_at or 0.0)
    return [(s.id, predict.Finished(s.user, _ran(s), None)) for s in ended]


def _ran(summary: JobSummary) -> float:
    """How long a summarised job ran, all its runs together."""
    earlier = sum(run.end - run.start for run in summary.runs)
    started, ended = summary.started_at, summary.ended_at or 0.0
    return earlier + (ended - started if started is not None else 0.0)


def _job_ran(job: Job) -> float:
    """How long an ended job ran: its earlier runs' service and its last run."""
    last = (job.ended_at or 0.0) - job.started_at if job.started_at is not None else 0.0
    return job.attained + max(0.0, last)

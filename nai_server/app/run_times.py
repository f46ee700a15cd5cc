"""Run-time predictions learned from this server's finished jobs, for the scheduler's
accounting (`Accounting.runtimes`, see `core.predict`).

With them a queued job's `est_start` counts on the running jobs ending when their
users' jobs usually end rather than at their time limits, and `scheduler.predict`
plans on them. Learned from the job history once (the archived jobs' summaries, which
keep no time limit, so they teach the run times of jobs without one), then from each
job that ends, as it is first seen ended among the hot jobs.
"""

from __future__ import annotations

import dataclasses
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
        self.seen: set[int] | None = None  # None: the history is not read yet
        self.runtimes: dict[str, float] = {}

    def with_predictions(self, accounting: Accounting, hot: Iterable[Job]) -> Accounting:
        """`accounting` with the predictions, the hot jobs that ended since learned."""
        if self.seen is None:
            self.seen = set()
            # The archived jobs only (no hot ones: those come below, with their limits).
            ended = sorted((s for s in self.store.job_summaries([])
                            if s.state in RAN_OUT and s.ended_at is not None),
                           key=lambda s: s.ended_at or 0.0)
            self._learn([(s.id, predict.Finished(s.user, _ran(s), None)) for s in ended])
        seen = self.seen
        new = sorted((job for job in hot if job.state in RAN_OUT and job.id not in seen
                      and job.ended_at is not None), key=lambda job: job.ended_at or 0.0)
        self._learn([(job.id, predict.Finished(job.user, _job_ran(job), job.time_limit))
                     for job in new])
        return dataclasses.replace(accounting, runtimes=self.runtimes)

    def _learn(self, finished: list[tuple[int, predict.Finished]]) -> None:
        if not finished:
            return
        assert self.seen is not None
        self.seen.update(job_id for job_id, _ in finished)
        self.history = predict.learn(self.history, (f for _, f in finished))
        self.runtimes = predict.runtimes(self.history)


def _ran(summary: JobSummary) -> float:
    """How long a summarised job ran, all its runs together."""
    earlier = sum(run.end - run.start for run in summary.runs)
    started, ended = summary.started_at, summary.ended_at or 0.0
    return earlier + (ended - started if started is not None else 0.0)


def _job_ran(job: Job) -> float:
    """How long an ended job ran: its earlier runs' service and its last run."""
    last = (job.ended_at or 0.0) - job.started_at if job.started_at is not None else 0.0
    return job.attained + max(0.0, last)

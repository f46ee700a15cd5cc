"""A dry-run submit's estimate: when a job would start were it queued now, planned
from the same inputs as the runtime's tick (`JobRuntime._schedule`), changing nothing."""

from __future__ import annotations

import dataclasses

from nai_server.core.job import Job
from nai_server.core.states import JobState
from nai_server.core.what_if import Estimate, estimate_start
from nai_server.host.runtime import JobRuntime, queued_view


def estimate(runtime: JobRuntime, job: Job, now: float) -> Estimate:
    """When `job` would start behind today's queue (see `core.what_if`). The one thing
    touched is the usage book's charge up to `now`, which the next tick makes anyway."""
    with runtime.lock:
        hot = runtime.jobs.hot()
        queued = [j for j in hot if j.state == JobState.QUEUED]
        # The tick's own view: GPUs that service replicas hold are held here too.
        _, cluster, accounting = runtime.plan_inputs(now, hot)
        accounting = runtime.run_times.with_predictions(accounting, hot)
        finished = runtime.finished_dependencies([*queued, job])
    # An id no job of the plan has: it orders last among jobs submitted at `now`.
    candidate = dataclasses.replace(
        queued_view(job), id=max((j.id for j in hot), default=0) + 1, submitted_at=now)
    return estimate_start(candidate, [queued_view(j) for j in queued], cluster, now,
                          finished=finished, policy=runtime.config.scheduler.policy,
                          accounting=accounting, tuning=runtime.tuning)

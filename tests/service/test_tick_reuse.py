"""The tick keeps what it worked out of a queued job (its record, the planner's view of
it) from one pass to the next while the job is unchanged; a change to the job must
still reach the plan."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from nai_server.core.job import Job
from nai_server.core.spec import JobSpec
from nai_server.core.states import TERMINAL, JobState
from nai_server.testing import make_service, tick_until


def test_a_queued_job_changed_between_ticks_is_planned_as_it_now_is(tmp_path: Path) -> None:
    service = make_service(tmp_path / "s", gpus=1)
    try:
        with service.lock:  # in the store as is: no submission would take 2 GPUs of 1
            job = service.store.insert(Job(
                id=0, user="me", state=JobState.QUEUED, submitted_at=time.time(),
                spec=JobSpec(command="true", gpus=2)))
        for _ in range(2):  # the second tick reuses what the first worked out
            service.tick()
        assert service.store.get_hot(job.id).state is JobState.QUEUED  # type: ignore[union-attr]
        with service.lock:
            service.store.update(job.id, spec=dataclasses.replace(job.spec, gpus=1))
        tick_until(service, lambda: service.store.get(job.id).state in TERMINAL,  # type: ignore[union-attr]
                   what="the job, now asking for one GPU, to run")
        assert service.store.get(job.id).state is JobState.SUCCEEDED  # type: ignore[union-attr]
    finally:
        service.close()

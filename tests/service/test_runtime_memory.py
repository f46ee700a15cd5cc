"""The run loop over the in-memory job store: real job processes on fake GPUs, where
the TinyDB files are not the point. Jobs are put in the store as records and read
back as records, the way the runtime sees them."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nai_server.config import load_config
from nai_server.core.job import Job, Run
from nai_server.core.spec import JobSpec
from nai_server.core.states import TERMINAL, JobState
from nai_server.host.gpus import FakeGpuInventory
from nai_server.host.launchers.local import LocalLauncher
from nai_server.host.runtime import JobRuntime
from nai_server.store.atomic import CommitLock
from nai_server.store.blobs import BlobStore
from nai_server.store.memory import MemoryJobStore
from nai_server.testing import end_jobs, wait_for


class NoRegistry:
    """Jobs here register no models; dropping unused versions has nothing to do."""

    def collect(self) -> None:
        pass

    def register_output(self, *args: object, **kwargs: object) -> None:
        raise AssertionError("no job here registers a model")


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[JobRuntime]:
    state = tmp_path / "state"
    config = load_config(None, mode="personal", state_dir=state, socket=state / "nai.sock",
                         fake_gpus=2, jobs={"cancel_grace_seconds": 5})
    state.mkdir(parents=True, exist_ok=True)
    runtime = JobRuntime(
        config, MemoryJobStore(), BlobStore(state / "blobs"),  # type: ignore[arg-type]
        FakeGpuInventory.with_count(2), LocalLauncher(), CommitLock(), time.time,
        drained=lambda: False, registry=NoRegistry(),  # type: ignore[arg-type]
        caller_for=lambda user: pytest.fail(f"no caller needed for {user}"))
    yield runtime
    end_jobs(runtime)
    runtime.close()


def submit(runtime: JobRuntime, command: str, user: str = "me", **spec: object) -> int:
    job = runtime.jobs.insert(Job(id=0, user=user, state=JobState.QUEUED,
                                  spec=JobSpec(command=command, **spec),  # type: ignore[arg-type]
                                  submitted_at=time.time(), time_limit=spec.get("time_limit")))
    return job.id


def record(runtime: JobRuntime, job_id: int) -> Job:
    job = runtime.jobs.get(job_id)
    assert job is not None
    return job


def ended(runtime: JobRuntime, job_id: int) -> Job | None:
    job = record(runtime, job_id)
    return job if job.state in TERMINAL else None


def test_a_job_runs_on_a_gpu_and_its_outputs_are_collected(runtime: JobRuntime) -> None:
    job_id = submit(runtime, 'echo "$CUDA_VISIBLE_DEVICES" > "$NAI_OUTPUT_DIR/gpu"', gpus=1)
    runtime.tick()
    started = record(runtime, job_id)
    assert started.active and len(started.gpus) == 1 and started.pid is not None
    done = wait_for(lambda: ended(runtime, job_id), step=runtime.tick, what="the job to end")
    assert done.state is JobState.SUCCEEDED and done.exit_code == 0
    assert done.output_tree is not None and done.gpus == started.gpus
    entries = runtime.blobs.get_tree(done.output_tree)
    assert [e.path for e in entries] == ["gpu"]
    assert not runtime.busy()


def test_a_failed_dependency_cancels_its_after_ok_dependant(runtime: JobRuntime) -> None:
    first = submit(runtime, "exit 3", gpus=0)
    then = submit(runtime, "true", gpus=0, after_ok=(first,))
    wait_for(lambda: ended(runtime, then), step=runtime.tick, what="the dependant to end")
    failed, cancelled = record(runtime, first), record(runtime, then)
    assert failed.state is JobState.FAILED and failed.message == "exit code 3"
    assert cancelled.state is JobState.CANCELLED and cancelled.started_at is None
    assert cancelled.message == (f"dependency job {first} ended failed, and this job would "
                                 f"run only after its success (after_ok)")


def test_the_shells_own_exit_codes_say_what_to_check(runtime: JobRuntime) -> None:
    # 127 and 126 are the shell's: not found, found but not runnable. The note says so,
    # rather than repeat "exit code 127" under the exit code line.
    missing = submit(runtime, "no-such-command-nai-test --epochs 5", gpus=0)
    runnable = submit(runtime, "/etc/passwd", gpus=0)
    wait_for(lambda: ended(runtime, missing) and ended(runtime, runnable), step=runtime.tick,
             what="both jobs to end")
    assert record(runtime, missing).exit_code == 127
    assert record(runtime, missing).message == (
        "exit code 127: most often the shell did not find the command; check the "
        "command's name and PATH in the job's environment (env_setup picks where python "
        "and the rest come from)")
    assert record(runtime, runnable).exit_code == 126
    assert (record(runtime, runnable).message or "").startswith(
        "exit code 126: most often the shell found the command but could not run it")


def test_a_job_past_its_time_limit_is_stopped_as_timed_out(runtime: JobRuntime) -> None:
    job_id = submit(runtime, 'touch "$NAI_OUTPUT_DIR/ready"; sleep 60', gpus=1, time_limit=60)
    runtime.tick()
    started = record(runtime, job_id)
    assert started.state is JobState.RUNNING and started.started_at is not None
    wait_for((runtime.job_dir(job_id) / "output" / "ready").exists, what="the job to start")
    runtime.tick(started.started_at + 61)  # the clock moves past the limit
    stopping = record(runtime, job_id)
    assert stopping.stop is not None and stopping.stop.kind is JobState.TIMED_OUT
    done = wait_for(lambda: ended(runtime, job_id), step=runtime.tick, what="the job to end")
    assert done.state is JobState.TIMED_OUT and not runtime.busy()


def test_a_preempted_job_is_requeued_keeping_its_service(runtime: JobRuntime) -> None:
    t0 = time.time()
    big = submit(runtime, "trap 'exit 0' TERM; touch \"$NAI_OUTPUT_DIR/ready\"; "
                          "while :; do sleep 0.02; done", user="heavy", gpus=2, preemptible=True)
    runtime.tick(t0)
    assert record(runtime, big).state is JobState.RUNNING
    ready = runtime.job_dir(big) / "output" / "ready"
    wait_for(ready.exists, what="the big job to be ready for SIGTERM")
    later = t0 + 600  # past preempt_min_run; the heavy user is over its share
    light = submit(runtime, "true", user="light", gpus=1)
    runtime.tick(later)
    stop = record(runtime, big).stop
    assert stop is not None and stop.kind is JobState.PREEMPTED and stop.for_job == light
    requeued = wait_for(lambda: (job := record(runtime, big)).state is JobState.QUEUED and job,
                        step=lambda: runtime.tick(later), what="the big job to be requeued")
    assert requeued.runs == (Run(t0, later, 2),) and requeued.attained == 600
    assert requeued.preemptions == 1 and requeued.gpus == () and requeued.pid is None
    assert requeued.stop is None and requeued.started_at is None
    assert f"to let job {light} start; requeued with 10m of service" in (requeued.message or "")
    assert wait_for(lambda: ended(runtime, light), step=lambda: runtime.tick(later),
                    what="the light job to run").state is JobState.SUCCEEDED

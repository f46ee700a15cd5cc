"""What this server can run: a submitted spec checked against its GPUs, and the memory,
CPU and time limits its configuration sets (filled in where the spec leaves them out)."""

from __future__ import annotations

import os

from nai_server.config import JobsConfig
from nai_server.core.resources import with_limits
from nai_server.core.spec import JobSpec, parse_duration
from nai_server.core.units import format_size
from nai_server.host.cgroup_limits import host_memory
from nai_server.host.runtime import JobRuntime
from nai_server.protocol import Invalid


def check_fits(runtime: JobRuntime, gpus: int, gpu_memory: int | None) -> None:
    """Refuse a job that could never start here: more GPUs or more GPU memory than the
    server has, or a CPU-only job where none run."""
    if runtime.config.launcher == "slurm":
        return  # the cluster's GPUs are Slurm's to count: sbatch refuses what never fits
    snapshot = runtime.state.snapshot or runtime.gpus.probe()
    total = len(snapshot.gpus)
    cpu_only = runtime.config.scheduler.cpu_slots > 0
    if gpus > total:
        what = f"; ask for at most {total}"
        if total == 0:  # a job that left --gpus out asked for the default 1 unawares
            what = ("; pass --gpus 0 (gpus: 0 in a job spec) for a CPU-only job"
                    if cpu_only else " and runs no CPU-only jobs (scheduler.cpu_slots is 0)")
        raise Invalid(f"gpus: {gpus} asked, but this server has {total} GPU(s){what}")
    if gpus == 0 and not cpu_only:
        raise Invalid("this server runs no CPU-only jobs (scheduler.cpu_slots is 0); "
                      "ask for at least one GPU")
    biggest = max((g.memory_total for g in snapshot.gpus), default=0)
    if gpu_memory and gpus and gpu_memory > biggest:
        raise Invalid(f"gpu_memory: {format_size(gpu_memory)} asked, but the largest GPU "
                      f"here has {format_size(biggest)}; ask for at most that")


def with_server_limits(jobs: JobsConfig, spec: JobSpec) -> JobSpec:
    """The spec with the memory and CPU limits the job runs under (the server's
    defaults filled in), refused beyond the server's maximum or what it has."""
    try:
        return with_limits(spec, host_memory=host_memory(), host_cpus=os.cpu_count() or 1,
                           default_memory=jobs.default_memory, max_memory=jobs.max_memory,
                           default_cpus=jobs.default_cpus, max_cpus=jobs.max_cpus)
    except ValueError as exc:
        raise Invalid(str(exc), details={"field": str(exc).split(":")[0]}) from exc


def time_limit(jobs: JobsConfig, asked: int | None) -> int | None:
    """The job's time limit: the one asked, else the server's default; capped at the
    server's maximum when none was asked, refused beyond it when one was."""
    default = parse_duration(jobs.default_time_limit) if jobs.default_time_limit else None
    limit = asked if asked is not None else default
    maximum = parse_duration(jobs.max_time_limit) if jobs.max_time_limit else None
    if maximum is not None and (limit is None or limit > maximum):
        if asked is None:
            return maximum
        raise Invalid(f"time_limit: at most {jobs.max_time_limit} on this server")
    return limit

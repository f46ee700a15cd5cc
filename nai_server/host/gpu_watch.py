"""Who is on the GPUs besides what the scheduler put there: processes nai did not
start (someone bypassing the queue), and a job's processes on a GPU it was not given
(a job that set CUDA_VISIBLE_DEVICES itself: without device cgroups, nothing else
stops it). The scheduler keeps a GPU with foreign processes out of its plans."""

from __future__ import annotations

import logging
from collections.abc import Callable

from nai_server.core.job import Job
from nai_server.host.gpus import GpuSnapshot
from nai_server.host.launchers.local import session_of

log = logging.getLogger("nai.runtime")

# gpu → (pid, memory, the job whose process it is if a job strayed onto it)
Foreign = dict[int, list[tuple[int, int, int | None]]]


class GpuWatch:
    """Finds the foreign processes of each tick's GPU snapshot; warns once about each
    job seen on a GPU it was not given, for as long as it stays there."""

    def __init__(self, job_of: Callable[[int], int | None]) -> None:
        self.job_of = job_of  # the job whose cgroup holds a pid, if any
        self._strays: set[tuple[int, int]] = set()  # (job, GPU) seen at the last tick

    def observe(self, snapshot: GpuSnapshot, hot: list[Job]) -> Foreign:
        """The processes on each GPU that are not there by the scheduler's plan."""
        ours = {j.pid: j for j in hot if j.active and j.pid}
        by_id = {j.id: j for j in ours.values()}
        foreign: Foreign = {}
        strayed: set[tuple[int, int]] = set()
        for gpu in snapshot.gpus:
            for proc in gpu.processes:
                job = (ours.get(session_of(proc.pid) or -1) or ours.get(proc.pid)
                       or by_id.get(self.job_of(proc.pid) or -1))
                if job is not None and gpu.index in job.gpus:
                    continue
                strays = job.id if job is not None else None
                foreign.setdefault(gpu.index, []).append((proc.pid, proc.used_memory, strays))
                if strays is None:
                    continue
                strayed.add((strays, gpu.index))
                if (strays, gpu.index) not in self._strays:  # logged once while it lasts
                    log.warning("job %s (pid %s) uses GPU %s, which it was not given",
                                strays, proc.pid, gpu.index)
        self._strays = strayed  # only what is seen now: bounded by the GPUs' processes
        return foreign

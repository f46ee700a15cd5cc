"""Why a job waits while a GPU is free, in words.

Backfill keeps free GPUs for the first waiting job (the *head*, see `core.backfill`),
so a job behind it can wait with `Priority` beside an idle GPU. Its owner sees only
that code; this says what holds the GPU: "GPU 1 is kept for job 7 (2 GPUs), which
starts when job 5 ends". Pure: the head, the cluster and the plan's starts in, a
sentence (or None when no free GPU is being kept) out.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from nai_server.core.sched_types import Cluster, GpuView, QueuedJob, Start, expected_end


def kept_for(head: QueuedJob, cluster: Cluster, starts: Iterable[Start],
             now: float) -> str | None:
    """Which free GPUs the plan keeps for `head`, and which running jobs' ends it waits
    for (those holding the GPUs that come back first, by their time limits)."""
    if head.gpus == 0:
        return None
    taken = {g for start in starts for g in start.gpus}
    taken.update(g for job in cluster.running for g in job.gpus)
    free = [g.index for g in cluster.gpus
            if g.held_by is None and g.index not in taken and _suits(g, head.gpu_memory)]
    if not free:
        return None
    kept = free[:head.gpus]
    need = head.gpus - len(kept)
    gpus = (f"GPU {kept[0]} is" if len(kept) == 1
            else f"GPUs {', '.join(map(str, kept))} are")
    sentence = f"{gpus} kept for job {head.id} ({_count(head.gpus, 'GPU')})"
    if need <= 0:
        return sentence
    # The running jobs whose GPUs come back first, as many GPUs as the head still needs.
    coming = sorted((expected_end(job, now), job.id, g) for job in cluster.running
                    if not job.stopping for g in job.gpus)
    awaited = sorted({job_id for _, job_id, _ in coming[:need]})
    if len(coming) < need:
        return sentence
    unlimited = any(end == float("inf") for end, _, _ in coming[:need])
    return (f"{sentence}, which starts when {_jobs(awaited)} "
            f"{'ends' if len(awaited) == 1 else 'end'}"
            + (" (no time limit: nobody knows when)" if unlimited else ""))


def _suits(gpu: GpuView, gpu_memory: int | None) -> bool:
    """Free for the head now: not used outside nai, or with the memory it asked for."""
    return not gpu.foreign if gpu_memory is None else gpu.memory_free >= gpu_memory


def _count(n: int, what: str) -> str:
    return f"{n} {what}" + ("" if n == 1 else "s")


def _jobs(ids: Sequence[int]) -> str:
    if len(ids) == 1:
        return f"job {ids[0]}"
    return f"jobs {', '.join(map(str, ids[:-1]))} and {ids[-1]}"

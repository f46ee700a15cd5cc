"""Services' replicas and the GPUs: what the job scheduler and the GPU listing see of
them, and which GPUs a new replica may have (free, within its owners' quotas)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from nai_server.core import scheduling as sched
from nai_server.core.service_rules import handle_pid
from nai_server.core.units import format_size, parse_size
from nai_server.host.gpu_watch import Foreign
from nai_server.host.launchers.local import session_of
from nai_server.host.runtime import JobRuntime
from nai_server.store.db import TinyDbStore

Doc = dict[str, Any]
SERVICE_ID_BASE = 1 << 40  # ids the scheduler sees for replicas: never a job's


def running(docs: list[Doc], placed: Callable[[str | None, int], int] = lambda _h, _n: 0
            ) -> list[sched.RunningJob]:
    """Replicas holding GPUs, as running jobs that never end and are never preempted:
    those given GPUs of this host (`gpus`), and those whose host placed them
    (`placed(handle, gpus_wanted)`: how many a replica holds on Slurm's nodes)."""
    held = []
    for doc in docs:
        for r in doc["replica_docs"]:
            elsewhere = 0 if r["gpus"] else placed(r.get("handle"), r.get("gpus_wanted") or 0)
            if r["gpus"] or elsewhere:
                held.append(sched.RunningJob(
                    id=SERVICE_ID_BASE + doc["number"] * 4096 + r["run"] % 4096,
                    user=doc["user"], group=doc["owner"].get("group"),
                    gpus=tuple(r["gpus"]), started_at=r.get("started_at") or 0.0,
                    time_limit=None, preemptible=False, gpus_elsewhere=elsewhere))
    return held


def holders(docs: list[Doc]) -> dict[int, tuple[str, str]]:
    """GPU → (service, user) of the replica holding it."""
    return {g: (doc["name"], doc["user"]) for doc in docs
            for r in doc["replica_docs"] for g in r["gpus"]}


def without_replicas(foreign: Foreign, docs: list[Doc]) -> Foreign:
    """The foreign processes of each GPU less the replicas' own on the GPUs they were
    given (a replica's process on another GPU stays foreign)."""
    own = {(pid, g) for d in docs for r in d["replica_docs"]
           if (pid := handle_pid(r.get("handle"))) for g in r["gpus"]}
    if not own:
        return foreign
    kept: Foreign = {}
    for gpu, procs in foreign.items():
        left = [p for p in procs if (session_of(p[0]) or p[0], gpu) not in own]
        if left:
            kept[gpu] = left
    return kept


def max_gpus(store: TinyDbStore, kind: str, name: str | None) -> int | None:
    """A user's or group's `max_gpus` quota (None: none)."""
    if name is None:
        return None
    found = store.get_user(name) if kind == "user" else store.get_group(name)
    value = ((found or {}).get("quota") or {}).get("max_gpus")
    return None if value is None else int(value)


def free_gpus(runtime: JobRuntime, store: TinyDbStore, docs: list[Doc], doc: Doc,
              count: int) -> tuple[int, ...] | str:
    """`count` GPUs that no job, replica (of `docs`, every service as decided so far)
    or foreign process holds, and no preemption keeps for its job, each with the
    service's `gpu_memory` free (as the GPU inventory last saw it), within the quotas
    of `doc`'s user and owning group; or why not, in words."""
    if count == 0:
        return ()
    snapshot = runtime.state.snapshot or runtime.gpus.probe()
    jobs = [j for j in runtime.jobs.hot() if j.active]
    busy = {g for j in jobs for g in j.gpus} | set(runtime.state.foreign)
    busy |= {g for d in docs for r in d["replica_docs"] for g in r["gpus"]}
    # Kept for the job a preemption stopped others for (core.scheduling.plan): a
    # replica placed there would hand the GPUs to nobody the preemption was for.
    busy |= {g for gpus in runtime.state.promised.values() for g in gpus}
    group = doc["owner"].get("group")
    for kind, name in (("user", doc["user"]), ("group", group)):
        quota = max_gpus(store, kind, name)
        if quota is None:
            continue
        held = sum(len(j.gpus) for j in jobs if getattr(j, kind) == name)
        held += sum(len(r["gpus"]) for d in docs for r in d["replica_docs"]
                    if (d["user"] if kind == "user" else d["owner"].get("group")) == name)
        if held + count > quota:
            return f"waiting: {kind} {name} holds {held} of the {quota} GPU(s) its quota allows"
    need = memory_needed(doc)
    free = sorted(g.index for g in snapshot.gpus
                  if g.index not in busy and g.memory_free >= need)
    if len(free) < count:
        memory = f" with {format_size(need)} of memory free" if need else ""
        return f"waiting for {count} free GPU(s){memory} ({len(free)} now)"
    return tuple(free[:count])


def memory_needed(doc: Doc) -> int:
    """Bytes each GPU of a replica must have free (a service recorded before this was
    checked keeps it as written, e.g. "8G")."""
    value = doc.get("gpu_memory")
    try:
        return parse_size(value) if value else 0
    except ValueError:
        return 0

"""`nai gpus` with `launcher: slurm`: the cluster's GPUs, node by node, from
`scontrol show node -o`, each with the Slurm job that holds it (from squeue's
`gres_detail`): a nai job (its id and owner) or someone else's Slurm job (its id and
unix user). The parsing is pure; SlurmRuntime runs the commands.

Slurm's text is read defensively: a node or a job record that cannot be read is
skipped (its GPUs shown free, or not shown), never fatal."""

from __future__ import annotations

import pwd
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from nai_server.host.launchers.slurm_text import SlurmJob
from nai_server.protocol import GpuList, GpuState

MAX_NODES = 4096
MAX_GPUS_PER_NODE = 64
MAX_HOSTS = 65536  # names one hostlist may expand to

_RANGE = re.compile(r"^(\d+)(?:-(\d+))?$")
_IDX = re.compile(r"IDX:([0-9,\-]+)")


@dataclass(frozen=True)
class Node:
    """One node of the cluster: its name, state and GPUs (by gres type, in order)."""

    name: str
    state: str
    gpus: tuple[str, ...]  # one entry per GPU: its gres type ("gpu", "a100"...)


def expand_hostlist(text: str) -> list[str]:
    """Slurm's compact host list ("n[1-3,7],gpu05") as names; [] when unreadable."""
    names: list[str] = []
    for part in re.findall(r"[^,\[]+(?:\[[^\]]*\])?[^,]*", text.strip()):
        if "[" not in part:
            names.append(part)
            continue
        head, _, rest = part.partition("[")
        inside, _, tail = rest.partition("]")
        for item in inside.split(","):
            m = _RANGE.match(item)
            if m is None:
                return []
            lo, hi = m.group(1), m.group(2) or m.group(1)
            if int(hi) - int(lo) > MAX_HOSTS - len(names):
                return []
            names += [f"{head}{i:0{len(lo)}d}{tail}" for i in range(int(lo), int(hi) + 1)]
    return names[:MAX_HOSTS]


def _indices(text: str) -> list[int]:
    found: list[int] = []
    for item in text.split(","):
        m = _RANGE.match(item)
        if m is not None:
            lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
            found += range(lo, min(hi, lo + MAX_GPUS_PER_NODE) + 1)
    return found


def node_gpus(gres: str) -> tuple[str, ...]:
    """A node's `Gres=` ("gpu:4", "gpu:a100:2(S:0-1),gpu:v100:2") as one type per GPU."""
    gpus: list[str] = []
    for item in re.sub(r"\([^)]*\)", "", gres).split(","):
        fields = item.split(":")
        if fields[0] != "gpu" or len(fields) < 2 or not fields[-1].isdigit():
            continue
        kind = fields[1] if len(fields) > 2 else "gpu"
        gpus += [kind] * min(int(fields[-1]), MAX_GPUS_PER_NODE)
    return tuple(gpus[:MAX_GPUS_PER_NODE])


def parse_nodes(text: str) -> list[Node]:
    """`scontrol show node -o` (one node a line, `Key=Value` fields)."""
    nodes = []
    for line in text.splitlines()[:MAX_NODES]:
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        name = fields.get("NodeName")
        if name:
            nodes.append(Node(name, fields.get("State", "").lower(),
                              node_gpus(fields.get("Gres", ""))))
    return nodes


def holders(jobs: Iterable[SlurmJob]) -> dict[tuple[str, int], SlurmJob]:
    """Which running job holds each (node, GPU index on the node): squeue's
    `gres_detail` has one entry per node of the job's node list, in order."""
    held: dict[tuple[str, int], SlurmJob] = {}
    for sj in jobs:
        if sj.phase != "running" or not sj.gres:
            continue
        for node, detail in zip(expand_hostlist(sj.nodes), sj.gres, strict=False):
            m = _IDX.search(detail)
            for index in _indices(m.group(1)) if m else ():
                held[(node, index)] = sj
    return held


def _unix_name(uid: int | None) -> str | None:
    if uid is None:
        return None
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def listing(nodes: list[Node], jobs: Iterable[SlurmJob], nai_job: Callable[[int], int | None],
            nai_user: Callable[[int], str | None], source: str, cpu_slots: int,
            cpu_slots_used: int, note: str | None = None,
            nai_service: Callable[[int], tuple[str, str] | None] = lambda _: None
            ) -> GpuList:
    """The GpuList of a cluster: GPUs numbered across its nodes (node by node, in
    `scontrol`'s order). A GPU held by one of this daemon's Slurm jobs (`nai_job`: the
    nai job of a Slurm id, from nai's records; never from the job's name, which anyone
    can make look like nai's) names the nai job and its owner; one held by any other
    Slurm job names that job and its unix user; one of a service's replicas
    (`nai_service`: its service and user, from nai's records too) names the service."""
    held = holders(jobs)
    gpus: list[GpuState] = []
    for node in nodes:
        for index, kind in enumerate(node.gpus):
            sj = held.get((node.name, index))
            job = user = service = None
            if sj is not None and (served := nai_service(sj.slurm_id)) is not None:
                service, user = served
            elif sj is not None:
                job = nai_job(sj.slurm_id)
                user = nai_user(job) if job is not None else None
                job = job if user is not None else None
                if job is None:
                    user = _unix_name(sj.uid)
            gpus.append(GpuState(
                index=len(gpus), uuid=f"slurm:{node.name}:{index}",
                name=kind if node.state in ("", "idle", "mixed", "allocated")
                else f"{kind} ({node.state})",
                memory_total=0, memory_used=0, memory_free=0, utilization=0,
                job=job, user=user, node=node.name, service=service,
                slurm_job=sj.slurm_id if sj is not None else None))
    return GpuList(source="nvml" if source == "nvml" else "fake", note=note, gpus=gpus,
                   cpu_slots=cpu_slots, cpu_slots_used=cpu_slots_used, cluster="slurm")

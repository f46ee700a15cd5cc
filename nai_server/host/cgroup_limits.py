"""Memory and CPU limits on a job's cgroup (the spec's `memory` and `cpus`).

Where the cgroup2 hierarchy has the memory and cpu controllers (pure cgroup v2), they
are enabled down to the daemon's cgroup and a job's limits are its cgroup's
`memory.max` (with `memory.swap.max` 0: a limit that spills to swap is not one) and
`cpu.max`. On a hybrid host those controllers belong to the v1 hierarchies
(/sys/fs/cgroup/memory, /sys/fs/cgroup/cpu): the job's wrapper then also joins a cgroup
of the same name there, limited by `memory.limit_in_bytes` (and `memsw`, no swap) and
`cpu.cfs_quota_us`. Where neither can be had, the limits are not enforced, and the job's
note and `nai-server check` say so. A job the kernel's OOM killer hit inside its limit
is reported from the cgroup's own counter (`memory.events`, v1's `memory.oom_control`).
"""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from nai_server.core.units import format_size

Controller = Literal["memory", "cpu"]
CONTROLLERS: tuple[Controller, ...] = ("memory", "cpu")
CPU_PERIOD = 100_000  # µs: a job with `cpus: 2` may run 200 ms of every 100 ms
# A v1 hierarchy is the controller's if it holds this file.
_V1_MARK = {"memory": "memory.limit_in_bytes", "cpu": "cpu.cfs_quota_us"}


def host_memory() -> int:
    """Bytes of RAM this host has."""
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _v2_available(root: Path) -> set[str]:
    try:
        return set((root / "cgroup.controllers").read_text().split())
    except OSError:
        return set()


def survey(kind: str, root: Path | None) -> dict[Controller, str]:
    """Where each controller could limit a job on this host ("cgroup v2", "cgroup v1"),
    without changing anything (for `nai-server check`)."""
    found: dict[Controller, str] = {}
    if root is None:
        return found
    available = _v2_available(root)
    for name in CONTROLLERS:
        if name in available:
            found[name] = "cgroup v2"
        elif kind == "hybrid" and (root.parent / name / _V1_MARK[name]).is_file():
            found[name] = "cgroup v1"
    return found


@dataclass
class Limits:
    """Which controllers limit this daemon's jobs, and where."""

    v2: set[str] = field(default_factory=set)  # enabled in the job cgroups' parent
    v1: dict[str, Path] = field(default_factory=dict)  # controller → dir of job cgroups
    problem: str | None = None  # why some are not enforced

    @property
    def enforced(self) -> set[str]:
        return self.v2 | set(self.v1)

    def describe(self) -> str:
        parts = [f"{name} (cgroup v2)" for name in CONTROLLERS if name in self.v2]
        parts += [f"{name} (cgroup v1)" for name in CONTROLLERS if name in self.v1]
        return "limits: " + (", ".join(parts) if parts else "none enforced") + (
            f"; {self.problem}" if self.problem else "")

    def unenforced(self, memory: object, cpus: object) -> str | None:
        """What of a job's asked limits this host does not enforce, in words."""
        asked = [name for name, value in (("memory", memory), ("cpu", cpus)) if value]
        missing = [name for name in asked if name not in self.enforced]
        if not missing:
            return None
        what = " and ".join(missing) + (" limits are" if len(missing) > 1 else " limit is")
        return f"{what} not enforced on this server ({self.problem or 'no cgroup per job'})"


def _enabled(path: Path) -> set[str]:
    try:
        return set((path / "cgroup.subtree_control").read_text().split())
    except OSError:
        return set()


def prepare(kind: str, root: Path, base: Path) -> Limits:
    """Enable what limits jobs under `base` (the daemon's cgroup2 dir of job cgroups):
    the controllers from the hierarchy's root down to `base` in cgroup2, or the same
    path in the v1 hierarchies of a hybrid host."""
    limits = Limits()
    relative = base.relative_to(root)
    wanted = [name for name in CONTROLLERS if name in _v2_available(root)]
    problems: list[str] = []
    chain = [*(root / p for p in reversed(relative.parents)), base]
    for name in wanted:  # one at a time: a host may delegate memory but not cpu
        try:
            for path in chain:
                if name not in _enabled(path):  # a delegated root is not ours to write
                    (path / "cgroup.subtree_control").write_text(f"+{name}")
            limits.v2.add(name)
        except OSError as exc:  # e.g. EBUSY: a delegated cgroup that holds the daemon
            problems.append(f"cannot enable the {name} controller for job cgroups: "
                            f"{exc.strerror or exc}")
    for name in CONTROLLERS:
        if name in limits.v2 or kind != "hybrid":
            continue
        hierarchy = root.parent / name
        if not (hierarchy / _V1_MARK[name]).is_file():
            continue
        # Made when a job first asks for a limit: a daemon killed with SIGKILL leaves
        # nothing behind in a hierarchy its jobs never used.
        existing = next(p for p in (hierarchy / relative, *(hierarchy / relative).parents)
                        if p.exists())
        if os.access(existing, os.W_OK):
            limits.v1[name] = hierarchy / relative
        else:
            problems.append(f"cannot make {name} cgroups in {existing} (not writable)")
    missing = [name for name in CONTROLLERS if name not in limits.enforced]
    if missing and not problems:
        problems.append(f"no {' or '.join(missing)} controller for cgroups here")
    limits.problem = "; ".join(problems) or None
    return limits


def apply(limits: Limits, cgroup: Path, name: str, memory: int | None,
          cpus: float | None) -> list[Path]:
    """Set the job's limits on its cgroup2 dir `cgroup` and make its v1 cgroups (called
    `name`); the v1 dirs, for the launcher to put the job's wrapper in."""
    joins: list[Path] = []
    quota = max(1000, round(cpus * CPU_PERIOD)) if cpus else None
    if memory and "memory" in limits.v2:
        (cgroup / "memory.max").write_text(str(memory))
        with contextlib.suppress(FileNotFoundError):  # no swap accounting: nothing to cap
            (cgroup / "memory.swap.max").write_text("0")
    if quota and "cpu" in limits.v2:
        (cgroup / "cpu.max").write_text(f"{quota} {CPU_PERIOD}")
    for controller, parent in limits.v1.items():
        if not (memory if controller == "memory" else quota):
            continue
        path = parent / name
        path.mkdir(parents=True, exist_ok=True)
        if controller == "memory":
            (path / "memory.limit_in_bytes").write_text(str(memory))
            with contextlib.suppress(FileNotFoundError):  # without swap accounting
                (path / "memory.memsw.limit_in_bytes").write_text(str(memory))
        else:
            (path / "cpu.cfs_period_us").write_text(str(CPU_PERIOD))
            (path / "cpu.cfs_quota_us").write_text(str(quota))
        joins.append(path)
    return joins


def _counter(path: Path, key: str) -> int:
    try:
        for line in path.read_text().splitlines():
            word, _, value = line.partition(" ")
            if word == key and value.strip().isdigit():
                return int(value)
    except OSError:
        pass
    return 0


def _limit(path: Path) -> int | None:
    try:
        raw = path.read_text().strip()
    except OSError:
        return None
    return int(raw) if raw.isdigit() and int(raw) < 2**62 else None  # v1's "no limit": ~2**63


def oom_note(limits: Limits, cgroup: Path, name: str) -> str | None:
    """"killed: out of memory (limit 16.0 GiB)" if the OOM killer killed any of the job's
    processes inside its memory limit."""
    if "memory" in limits.v2:
        kills, limit = _counter(cgroup / "memory.events", "oom_kill"), _limit(
            cgroup / "memory.max")
    elif "memory" in limits.v1:
        path = limits.v1["memory"] / name
        kills, limit = _counter(path / "memory.oom_control", "oom_kill"), _limit(
            path / "memory.limit_in_bytes")
    else:
        return None
    if not kills:
        return None
    shown = f" (limit {format_size(limit)})" if limit is not None else ""
    return f"killed: out of memory{shown}"


def remove(limits: Limits, name: str) -> bool:
    """Remove the job's v1 cgroups once empty (False: a process is still on its way out)."""
    done = True
    for parent in limits.v1.values():
        try:
            (parent / name).rmdir()
        except FileNotFoundError:
            continue
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                raise
            done = False
    return done


def names(limits: Limits) -> Iterable[str]:
    """The job cgroups in the v1 hierarchies (some may outlive their cgroup2 twin)."""
    for parent in limits.v1.values():
        with contextlib.suppress(OSError):
            yield from (entry.name for entry in os.scandir(parent) if entry.is_dir())


def close(limits: Limits) -> None:
    for parent in limits.v1.values():
        with contextlib.suppress(OSError):
            parent.rmdir()

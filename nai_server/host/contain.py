"""Keeping all of a job's processes together, so that they all end with it (DESIGN §11).

A job may leave processes behind: `cmd &` children its shell did not wait for, and
`setsid` grandchildren that left its process group and session. On a GPU server they
keep GPU memory after the GPU went to the next job. Where the host has a cgroup v2
hierarchy the daemon may write to, every job runs in a cgroup of its own,
`<root>/nai/<daemon>/job-<id>`: the launcher puts the job's wrapper there before the
job starts, so everything it ever forks is inside, and when the job ends (or is
cancelled, or times out) the whole cgroup is killed and removed. Two layouts are
found on hosts today: pure cgroup v2 at /sys/fs/cgroup (systemd's default on recent
distributions) and the hybrid one, v1 controllers with a cgroup2 hierarchy at
/sys/fs/cgroup/unified; `cgroup.procs` and `cgroup.kill` work the same in both.

Where no cgroup can be made (no cgroup2 mounted, a daemon that is not root and was
not delegated one), the fallback kills what is left of the job's session: its
background children, not what escaped with setsid. In both cases a process on one of
the job's GPUs that belongs to the job's owner and started after the job did is
killed when the job ends (NVML lists it even when it escaped everything else).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from nai_server.host import cgroup_limits
from nai_server.host.gpus import GpuSnapshot
from nai_server.host.launchers.local import proc_start_ticks, proc_uid, session_of

log = logging.getLogger("nai.contain")

CGROUP_FS = Path("/sys/fs/cgroup")
CLOSE_WAIT = 2.0  # seconds for the processes killed at the end to go
KILL_ROUNDS = 20  # without cgroup.kill: rounds of SIGKILL against a forking job


@dataclass(frozen=True)
class Layout:
    """Which cgroup hierarchy this host has, and where its cgroup2 part is mounted."""

    kind: Literal["v2", "hybrid", "none"]
    root: Path | None

    def describe(self) -> str:
        if self.kind == "v2":
            return f"cgroup v2 at {self.root}"
        if self.kind == "hybrid":
            return f"hybrid cgroups: v1 controllers, cgroup2 at {self.root}"
        return "no cgroup2 hierarchy mounted"


def detect(base: Path = CGROUP_FS) -> Layout:
    if (base / "cgroup.controllers").is_file():
        return Layout("v2", base)
    if (base / "unified" / "cgroup.procs").is_file():
        return Layout("hybrid", base / "unified")
    return Layout("none", None)


def _own_cgroup() -> str | None:
    """This process's path in the cgroup2 hierarchy (the "0::" line)."""
    try:
        for line in Path("/proc/self/cgroup").read_text().splitlines():
            if line.startswith("0::"):
                return line[3:]
    except OSError:
        return None
    return None


def _live(pids: Iterable[int]) -> list[int]:
    return [p for p in pids if proc_start_ticks(p) is not None]


def _plural(count: int, one: str, many: str) -> str:
    return f"{count} {one if count == 1 else many}"


def cgroup_pids(path: Path) -> list[int]:
    """The processes in the cgroup dir `path` (none if it is gone)."""
    try:
        raw = (path / "cgroup.procs").read_text()
    except OSError:
        return []
    return [int(p) for p in raw.split() if p.isdigit()]


def kill_cgroup(path: Path) -> list[int]:
    """SIGKILL every process in the cgroup dir `path` (a job's, a service replica's);
    the live ones it held."""
    if not path.exists():
        return []
    live = _live(cgroup_pids(path))
    if not live:
        return []
    if (path / "cgroup.kill").is_file():
        with contextlib.suppress(OSError):
            (path / "cgroup.kill").write_text("1")
            return live
    for _ in range(KILL_ROUNDS):  # a kernel before 5.14: one by one until none is left
        pids = cgroup_pids(path)
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
    return live


class Containment:
    """The cgroups of one daemon's jobs (or, without them, the fallback)."""

    def __init__(self, state_dir: Path, layout: Layout | None = None) -> None:
        self.layout = detect() if layout is None else layout
        self._joins: dict[int, list[Path]] = {}
        self.base: Path | None = None
        self.problem: str | None = None
        self.limits = cgroup_limits.Limits()
        try:
            self.base = self._make_base(state_dir)
        except OSError as exc:
            self.problem = f"cannot make cgroups: {exc.strerror or exc}"
        if self.base is not None and self.layout.root is not None:
            self.limits = cgroup_limits.prepare(self.layout.kind, self.layout.root, self.base)
        else:
            self.limits.problem = self.problem or (
                "no cgroup2 hierarchy mounted" if self.layout.root is None
                else "no cgroup delegated to the daemon's user")
        if self.limits.problem:
            log.warning("memory and CPU limits of jobs: %s", self.limits.problem)
        if self.base is None:
            log.warning("jobs run without a cgroup each (%s; %s): only what stays in a "
                        "job's session is killed when it ends",
                        self.layout.describe(), self.problem or "no cgroup2 here")

    def _make_base(self, state_dir: Path) -> Path | None:
        root = self.layout.root
        if root is None:
            return None
        if os.geteuid() == 0:
            parent = root / "nai"
        else:  # only a cgroup delegated to this user (systemd's Delegate=yes) is writable
            own = _own_cgroup()
            if own is None:
                return None
            parent = root / own.lstrip("/") / "nai-jobs"
        # One daemon's jobs apart from another's (tests run many on one host).
        tag = hashlib.sha256(str(state_dir.resolve()).encode()).hexdigest()[:12]
        base = parent / f"d-{tag}"
        base.mkdir(parents=True, exist_ok=True)
        return base

    @property
    def active(self) -> bool:
        return self.base is not None

    def describe(self) -> str:
        if self.base is not None:
            return (f"{self.layout.describe()}; a cgroup per job under {self.base}; "
                    f"{self.limits.describe()}")
        return f"{self.layout.describe()}; {self.problem or 'no cgroup per job'}"

    def path(self, job_id: int) -> Path | None:
        return None if self.base is None else self.base / f"job-{job_id}"

    def create(self, job_id: int, memory: int | None = None,
               cpus: float | None = None) -> Path | None:
        """The job's cgroup, empty and limited to `memory` bytes and `cpus` CPUs where
        this host can, for the launcher to start its wrapper in."""
        path = self.path(job_id)
        if path is None:
            return None
        if path.exists():  # left by an earlier run of the job (preempted, or a crash):
            self.kill(job_id)  # a fresh one, so that its OOM count is this run's
            deadline = time.monotonic() + CLOSE_WAIT
            with contextlib.suppress(OSError):
                while not self.remove(job_id) and time.monotonic() < deadline:
                    time.sleep(0.01)
        path.mkdir(exist_ok=True)
        self._joins[job_id] = cgroup_limits.apply(self.limits, path, path.name, memory, cpus)
        return path

    def joins(self, job_id: int) -> tuple[Path, ...]:
        """The job's v1 cgroups its wrapper joins too (a hybrid host's memory and cpu)."""
        return tuple(self._joins.pop(job_id, ()))

    def unenforced(self, memory: int | None, cpus: float | None) -> str | None:
        """Which of the memory and CPU limits a job asks this host cannot enforce."""
        return self.limits.unenforced(memory, cpus)

    def oom_note(self, job_id: int) -> str | None:
        """"killed: out of memory (limit …)" if the OOM killer hit the job."""
        path = self.path(job_id)
        return None if path is None else cgroup_limits.oom_note(self.limits, path, path.name)

    def pids(self, job_id: int) -> list[int]:
        path = self.path(job_id)
        return [] if path is None else cgroup_pids(path)

    def signal(self, job_id: int, sig: int) -> None:
        for pid in self.pids(job_id):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)

    def kill(self, job_id: int) -> list[int]:
        """SIGKILL every process in the job's cgroup; the live ones it held."""
        path = self.path(job_id)
        return [] if path is None else kill_cgroup(path)

    def remove(self, job_id: int) -> bool:
        """Remove the job's cgroup once its processes are gone (False: not yet)."""
        path = self.path(job_id)
        if path is None:
            return True
        if not cgroup_limits.remove(self.limits, path.name):
            return False
        try:
            path.rmdir()
        except FileNotFoundError:
            return True
        except OSError as exc:
            if exc.errno == errno.EBUSY:  # killed processes still on their way out
                return False
            raise
        return True

    def job_of(self, pid: int) -> int | None:
        """The job whose cgroup holds `pid`, if any of ours does."""
        if self.base is None or self.layout.root is None:
            return None
        try:
            lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
        except OSError:
            return None
        prefix = "/" + str(self.base.relative_to(self.layout.root)) + "/job-"
        for line in lines:
            if line.startswith("0::" + prefix):
                name = line[3 + len(prefix):].split("/", 1)[0]
                return int(name) if name.isdigit() else None
        return None

    def sweep(self, keep: set[int]) -> bool:
        """Kill and remove the cgroups of jobs that are no longer running (left by a
        crash between a job's end and its cgroup's removal, or still emptying); whether
        none is left."""
        if self.base is None:
            return True
        try:
            names = {p.name for p in self.base.iterdir() if p.name.startswith("job-")}
        except OSError:
            return True
        names |= {n for n in cgroup_limits.names(self.limits) if n.startswith("job-")}
        clean = True
        for name in names:
            job_id = name[4:]
            if not job_id.isdigit() or int(job_id) in keep:
                continue
            if killed := self.kill(int(job_id)):
                log.warning("job %s: killed %d process(es) left in its cgroup", job_id,
                            len(killed))
            try:
                clean = self.remove(int(job_id)) and clean
            except OSError:
                clean = False
        return clean

    def close(self, keep: set[int]) -> None:
        """Remove the cgroups of ended jobs (waiting a moment for killed processes to
        go), and this daemon's own if no job is left in it."""
        if self.base is None:
            return
        deadline = time.monotonic() + CLOSE_WAIT
        while not self.sweep(keep) and time.monotonic() < deadline:
            time.sleep(0.01)
        for job_id in keep:  # a running job's cgroup that is empty: its job has ended
            with contextlib.suppress(OSError):
                self.remove(job_id)
        cgroup_limits.close(self.limits)
        with contextlib.suppress(OSError):
            self.base.rmdir()


def session_leftovers(session: int, uid: int | None, since: int) -> list[int]:
    """Without a cgroup: the live processes still in the job's session (its wrapper's
    pid), owned by `uid` when given and started no earlier than the job."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        if pid == os.getpid() or session_of(pid) != session:
            continue
        ticks = proc_start_ticks(pid)
        if ticks is None or ticks < since or (uid is not None and proc_uid(pid) != uid):
            continue
        found.append(pid)
    return found


def kill_pids(pids: Iterable[int]) -> list[int]:
    killed = []
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            continue
        killed.append(pid)
    return killed


def gpu_leftovers(snapshot: GpuSnapshot | None, gpus: Iterable[int], uid: int, since: int,
                  skip: Callable[[int], bool]) -> dict[int, list[int]]:
    """Processes on the job's GPUs owned by its user that started after the job did and
    that `skip` does not claim (another job's): GPU → pids."""
    if snapshot is None or since < 0:
        return {}
    mine = set(gpus)
    found: dict[int, list[int]] = {}
    for gpu in snapshot.gpus:
        if gpu.index not in mine:
            continue
        for proc in gpu.processes:
            ticks = proc_start_ticks(proc.pid)
            if (proc.pid == os.getpid() or ticks is None or ticks < since
                    or proc_uid(proc.pid) != uid or skip(proc.pid)):
                continue
            found.setdefault(gpu.index, []).append(proc.pid)
    return found


def leftover_note(killed: int, on_gpus: dict[int, list[int]]) -> str | None:
    """What the job's end killed, for its message."""
    parts = []
    if killed:
        parts.append(_plural(killed, "leftover process of the job was killed",
                             "leftover processes of the job were killed"))
    for gpu, pids in sorted(on_gpus.items()):
        listed = ", ".join(str(p) for p in pids)
        parts.append(_plural(len(pids), "process", "processes")
                     + f" of the job's user still on GPU {gpu} after it ended "
                     + ("was" if len(pids) == 1 else "were") + f" killed (pid {listed})")
    return "; ".join(parts) or None


def end_job(contain: Containment, job_id: int, wrapper: int | None, since: int, uid: int,
            snapshot: GpuSnapshot | None, gpus: Iterable[int], others: set[int]) -> str | None:
    """Kill whatever the job left running once its wrapper has ended; what was killed,
    in words, for the job's message. `others`: the wrappers of the jobs still running,
    whose processes are never touched."""
    cgroup = contain.path(job_id)
    oom = contain.oom_note(job_id)
    if cgroup is not None and cgroup.exists():
        killed = contain.kill(job_id)
        with contextlib.suppress(OSError):
            contain.remove(job_id)  # or later, by sweep(), once they are gone
    elif wrapper is not None and since >= 0:  # no cgroup here, or a job started without
        killed = kill_pids(session_leftovers(wrapper, uid, since))
    else:
        killed = []

    def skip(pid: int) -> bool:
        return (pid in killed or contain.job_of(pid) not in (None, job_id)
                or session_of(pid) in others)

    on_gpus = gpu_leftovers(snapshot, gpus, uid, since, skip)
    for pids in on_gpus.values():
        kill_pids(pids)
    note = leftover_note(len(killed), on_gpus)
    if note:
        log.warning("job %s: %s", job_id, note)
    return "; ".join(n for n in (oom, note) if n) or None

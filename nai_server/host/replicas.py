"""Service replicas on this host: their directories, processes and sockets.

A replica runs as its service's user, started by the jobs' launcher (a wrapper in its
own session that records its pid and exit status in a root-owned file), in
`<state>/services/<dir>/`: a directory the daemon owns (0711) holding its log, the
wrapper's status file, the model version read-only in `model/` (links to the blobs,
as a job's `model:`), and `run/`, the one directory the user owns, where the replica
binds its socket `run/serve.sock` ($NAI_SERVE_SOCKET).

The user can put anything at `run/serve.sock`: a symlink to a root-owned socket, a
FIFO, a socket that never answers. So the daemon opens `run/` without following
links, accepts only a socket owned by the user, connects through the directory's
descriptor without blocking, and then requires the peer at the other end to be a
process of that user (SO_PEERCRED): a link swapped in between the check and the
connect still reaches no one else. Reads have deadlines; nothing a replica does can
make the daemon wait longer than them.

A replica on another machine (a Slurm job) is reached over TCP instead, where no
SO_PEERCRED can say who listens: its directory holds a token for the run, and both
ends prove they know it before any HTTP (replica_link, serving/link).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import signal
import socket
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from nai_server.core.processing import plugin_path
from nai_server.core.service_rules import DEFAULT_COMMAND
from nai_server.host import cgroup_limits, jobfiles, mounts, unix, user_folders, user_socket
from nai_server.host.contain import Containment, kill_cgroup
from nai_server.host.launchers.local import (
    Handle,
    LaunchRequest,
    LocalLauncher,
    proc_start_ticks,
    proc_uid,
    read_wrapper_pid,
    session_of,
)
from nai_server.host.replica_http import MAX_HEAD  # the relay's cap on a head, too
from nai_server.host.replica_link import (
    LinkSocket,
    greet_sync,
    linked,
    open_link,
)
from nai_server.host.replica_link import (
    ReplicaUnreachable as ReplicaUnreachable,  # where callers have looked for it
)
from nai_server.host.user_socket import DIR_FLAGS
from nai_server.store.blobs import BlobStore

log = logging.getLogger("nai.services")
SOCKET_DIR = "run"
REMOVED = ".removed"  # removed replicas' directories, on their way out
PURGE_TIMEOUT = 60.0  # seconds a helper may take to empty a removed replica's run/
SOCKET_NAME = "serve.sock"
MODEL_DIR = "model"
UNKNOWN = ""  # adopt(): cannot tell yet whether the launch got through; ask again
CGROUP_PREFIX = "svc-"  # beside the jobs' "job-N" in the daemon's cgroup


@dataclass(frozen=True)
class Owner:
    """Who a replica runs as: None ids in a personal daemon (its own user)."""

    user: str
    uid: int | None = None
    gid: int | None = None
    groups: tuple[int, ...] = ()

    @property
    def expected_uid(self) -> int:
        """The uid the replica's socket and process must have."""
        return os.getuid() if self.uid is None else self.uid


@dataclass(frozen=True)
class ReplicaStart:
    """What to start: a replica of a model version, as `owner`, on `gpus`."""

    dir: Path
    tree_id: str
    command: str
    owner: Owner
    gpus: tuple[int, ...]
    env: dict[str, str] = field(default_factory=dict)  # NAI_* about the service
    memory: int | None = None  # its cgroup's limits, as a job's
    cpus: float | None = None
    gpus_wanted: int = 0  # how many, where the host places it (places_gpus False)
    group: str | None = None  # the nai group owning the service (its Slurm account)


class ReplicaRefused(Exception):
    """The host will never run this replica as asked (Slurm's words): the service fails
    at once rather than retry."""


def local_handle(handle: Handle) -> str:
    return f"{handle.pid}:{handle.start_ticks}"


def parse_local(handle: str | None) -> Handle | None:
    """A local handle's pid and start time; None for another host's handle."""
    pid, sep, ticks = (handle or "").partition(":")
    if not sep or not pid.isdigit() or not ticks.lstrip("-").isdigit():
        return None
    return Handle(int(pid), int(ticks))


class ReplicaHost:
    """Builds, starts, watches, signals and removes replicas under `root`, as processes
    of this host on the GPUs the supervisor picks (`places_gpus`)."""

    places_gpus = True  # False: the host's scheduler places replicas (Slurm's)

    def __init__(self, root: Path, blobs: BlobStore, personal: bool,
                 launcher: LocalLauncher | None = None,
                 contain: Containment | None = None) -> None:
        self.root = root
        self.blobs = blobs
        self.personal = personal
        self.launcher = launcher or LocalLauncher()
        self.contain = contain  # the jobs' cgroups: replicas get theirs beside them
        self.leftover_cgroups: set[str] = set()
        root.mkdir(parents=True, exist_ok=True)
        os.chmod(root, 0o700 if personal else 0o711)
        # Removed replicas' directories, moved here at once and purged in the background
        # (`remove`); those a daemon stopped before it purged them go now.
        self.removed = root / REMOVED
        self.removed.mkdir(mode=0o700, exist_ok=True)
        self._purger = ThreadPoolExecutor(1, thread_name_prefix="nai-replica-purge")
        for left in sorted(self.removed.iterdir()):
            self._purger.submit(self._purge, left)

    def path(self, name: str) -> Path:
        return self.root / name

    def owner(self, user: str) -> Owner | None:
        """The unix identity a replica of `user` runs as; None: no such account."""
        if self.personal or os.geteuid() != 0:
            return Owner(user)
        account = unix.unix_account(user)
        if account is None:
            return None
        return Owner(user, account.pw_uid, account.pw_gid, tuple(unix.unix_groups(user)))

    # --- starting ---------------------------------------------------------------------

    def build(self, start: ReplicaStart) -> None:
        """The replica's directory, new: model read-only, `run/` the owner's."""
        where = start.dir
        if os.path.lexists(where):
            self.remove(where)
        building = where.with_name(f".{where.name}.new")
        if os.path.lexists(building):
            self.remove(building)
        building.mkdir(mode=0o700)
        mounts.mount(self.blobs, start.tree_id, building / MODEL_DIR)
        run = building / SOCKET_DIR
        run.mkdir(mode=0o700)
        if start.owner.uid is not None:
            os.chown(run, start.owner.uid, start.owner.gid if start.owner.gid is not None else -1)
        if start.owner.uid is not None:  # its owner's replica passes through; no one else
            unix.traversable_by(building, start.owner.uid)
        else:
            os.chmod(building, 0o711)
        os.rename(building, where)

    def start(self, start: ReplicaStart) -> str:
        """Build the replica's directory and start it; its handle."""
        self.build(start)
        env, command = self.environment(start)
        owner = start.owner
        cgroup, joins = self._cgroup(start)
        request = LaunchRequest(
            job_id=0, job_dir=start.dir, command=command, env=env,
            cwd=start.dir / MODEL_DIR, uid=owner.uid, gid=owner.gid, groups=owner.groups,
            cgroup=cgroup, joins=joins)
        return local_handle(self.launcher.start(request))

    def environment(self, start: ReplicaStart) -> tuple[dict[str, str], str]:
        """The replica's environment and the command it runs."""
        owner = start.owner
        account = unix.unix_account(owner.user)
        home = account.pw_dir if account else os.environ.get("HOME", "/")
        env = {
            "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
            "HOME": home, "USER": owner.user, "LOGNAME": owner.user, "SHELL": "/bin/sh",
            "LANG": os.environ.get("LANG", "C.UTF-8"), "PYTHONUNBUFFERED": "1",
            **({"PYTHONPATH": found} if (found := plugin_path(os.environ.get("PYTHONPATH")))
               else {}),
            **start.env,
            "NAI_MODEL_DIR": str(start.dir / MODEL_DIR),
            "NAI_SERVE_SOCKET": str(start.dir / SOCKET_DIR / SOCKET_NAME),
            "NAI_REPLICA_DIR": str(start.dir),
            "CUDA_VISIBLE_DEVICES": ",".join(str(g) for g in start.gpus),
            "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
        }
        command = start.command
        if command == DEFAULT_COMMAND:  # nai's own server: this Python, wherever PATH leads
            command = f"exec {shlex.quote(sys.executable)} -m nai_server.serving.replica"
        return env, command

    # --- cgroups ----------------------------------------------------------------------

    def _cgroup(self, start: ReplicaStart) -> tuple[Path | None, tuple[Path, ...]]:
        """The replica's own cgroup beside the jobs' (named after its directory), with
        a job's memory and CPU limits (cgroup_limits), and the v1 cgroups it joins too;
        none where the host gives the daemon no cgroups."""
        box = self.contain
        if box is None or box.base is None:
            return None, ()
        path = box.base / f"{CGROUP_PREFIX}{start.dir.name}"
        self._remove_cgroup(path.name)  # a fresh one: left by a crash, it held a run
        path.mkdir(exist_ok=True)
        return path, tuple(cgroup_limits.apply(box.limits, path, path.name, start.memory,
                                               start.cpus))

    def _remove_cgroup(self, name: str) -> None:
        """Kill what is left in a replica's cgroup and remove it (one whose processes
        are still on their way out is tried again: `retry_cgroups`)."""
        box = self.contain
        if box is None or box.base is None:
            return
        path = box.base / name
        with contextlib.suppress(OSError):
            kill_cgroup(path)  # without cgroup.kill (before 5.14), by SIGKILL rounds
        try:
            if cgroup_limits.remove(box.limits, name):
                path.rmdir()
                self.leftover_cgroups.discard(name)
                return
        except FileNotFoundError:
            self.leftover_cgroups.discard(name)
            return
        except OSError:
            pass
        self.leftover_cgroups.add(name)  # its processes are still on their way out

    def retry_cgroups(self) -> None:
        """Try again to remove the cgroups that were still emptying."""
        for name in sorted(self.leftover_cgroups):
            self._remove_cgroup(name)

    def sweep_cgroups(self, kept: set[str]) -> None:
        """Remove replicas' cgroups whose directory name is not in `kept`."""
        box = self.contain
        if box is None or box.base is None:
            return
        try:
            names = {p.name for p in box.base.iterdir()}
        except OSError:
            return
        names |= set(cgroup_limits.names(box.limits))
        for name in sorted(names):
            if name.startswith(CGROUP_PREFIX) and name[len(CGROUP_PREFIX):] not in kept:
                self._remove_cgroup(name)

    # --- watching ---------------------------------------------------------------------

    def status(self, where: Path, handle: str) -> str:
        """running, exited or vanished (and, on a host that queues, queued or unknown:
        see `waiting`)."""
        return str(self.launcher.status(where, parse_local(handle))[0])

    def exit_code(self, where: Path, handle: str) -> int | None:
        """The exit status of a replica whose process ended (None: not known)."""
        return self.launcher.status(where, parse_local(handle))[1]

    def waiting(self, handle: str) -> str:
        """Why a queued replica waits (a queueing host's words); none here."""
        return ""

    def gpus_placed(self, handle: str | None, wanted: int) -> int:
        """How many GPUs a replica that asked for `wanted` holds where this host's
        scheduler placed them (`places_gpus` False); none here, where the replica's
        GPUs are those the supervisor gave it (its `gpus`)."""
        return 0

    def adopt(self, where: Path, owner: Owner) -> str | None:
        """The running wrapper a daemon that died while starting it left: its handle,
        if it lives, leads its session and is the owner's; None: it did not start
        (UNKNOWN: cannot tell yet, a host that must ask its scheduler first)."""
        pid = read_wrapper_pid(where)
        ticks = proc_start_ticks(pid) if pid else None
        if (pid and ticks is not None and session_of(pid) == pid
                and proc_uid(pid) == owner.expected_uid):
            return local_handle(Handle(pid, ticks))
        return None

    def alive(self, handle: str) -> bool:
        local = parse_local(handle)
        ticks = proc_start_ticks(local.pid) if local is not None else None
        return ticks is not None and local is not None and (
            local.start_ticks < 0 or ticks == local.start_ticks)

    def signal(self, handle: str, sig: int = signal.SIGTERM) -> None:
        local = parse_local(handle)
        if local is not None:
            self.launcher.signal(local, sig)

    def log_tail(self, where: Path, limit: int = 2000, lines: int = 10) -> str:
        """The last lines of the replica's log (a FIFO or a link there is not read)."""
        try:
            with jobfiles.open_regular(where, "log") as fd:
                if fd is None:
                    return ""
                size = os.fstat(fd).st_size
                tail = os.pread(fd, limit, max(0, size - limit))
        except OSError:
            return ""
        text = tail.decode("utf-8", "replace").rstrip("\n")
        return "\n".join(text.splitlines()[-lines:])

    def remove(self, where: Path) -> None:
        """The replica's directory and cgroup, gone (the model's links go; the blobs
        stay)."""
        self._remove_cgroup(f"{CGROUP_PREFIX}{where.name}")
        if not os.path.lexists(where):
            return
        mounts.unmount(where / MODEL_DIR)
        # Its `run/` is the user's, who may have put anything there, even swap a folder
        # for a FIFO or a link while root's rmtree walked it (which opens each folder by
        # name: it would block for good, or open a device): out of the way at once,
        # then emptied as the user by a helper with a deadline, in the background, so
        # no supervisor step waits on what a user's folder holds.
        gone = self.removed / f"{where.name}.{time.time_ns()}"
        try:
            os.rename(where, gone)
        except OSError as exc:
            log.warning("replica %s: not removed: %s", where.name, exc)
            return
        self._purger.submit(self._purge, gone)

    def _purge(self, path: Path) -> None:
        if not user_folders.remove_tree(path, (SOCKET_DIR,), PURGE_TIMEOUT):
            log.warning("%s: its run/ could not be emptied as its user; left for an admin",
                        path)

    # --- talking to it ----------------------------------------------------------------

    def connect(self, where: Path, owner: Owner) -> socket.socket:
        """A connected, non-blocking socket to the replica; ReplicaUnreachable if its
        socket is not the owner's own, or nothing of the owner's listens on it. A
        replica on the TCP link (replica_link) gets a LinkSocket, connected and checked
        by its first use."""
        if linked(where):
            return open_link(where, owner.expected_uid)
        try:
            dir_fd = os.open(where / SOCKET_DIR, DIR_FLAGS)
        except OSError as exc:
            raise ReplicaUnreachable(f"no socket directory: {exc.strerror}") from exc
        try:
            return user_socket.connect(dir_fd, SOCKET_NAME, owner.expected_uid, owner.user)
        except user_socket.SocketRefused as exc:
            raise ReplicaUnreachable(str(exc)) from exc
        finally:
            os.close(dir_fd)

    def probe(self, where: Path, owner: Owner, path: str, timeout: float) -> tuple[bool, str]:
        """GET `path` on the replica: (healthy, why not). Never longer than `timeout`."""
        deadline = time.monotonic() + timeout
        try:
            sock = self.connect(where, owner)
        except ReplicaUnreachable as exc:
            return False, str(exc)
        with contextlib.closing(sock):
            try:
                if isinstance(sock, LinkSocket):
                    greet_sync(sock, timeout)
                sock.setblocking(True)
                sock.settimeout(timeout)
                sock.sendall(f"GET {path} HTTP/1.1\r\nHost: replica\r\n"
                             "Connection: close\r\n\r\n".encode())
                head = b""
                while b"\r\n" not in head and len(head) < MAX_HEAD:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False, f"no answer to GET {path} within {timeout:g}s"
                    sock.settimeout(left)
                    chunk = sock.recv(4096)
                    if not chunk:
                        break
                    head += chunk
            except TimeoutError:
                return False, f"no answer to GET {path} within {timeout:g}s"
            except OSError as exc:
                return False, f"GET {path}: {exc.strerror or exc}"
            except ReplicaUnreachable as exc:
                return False, str(exc)
        line = head.split(b"\r\n", 1)[0].split()
        if len(line) >= 2 and line[1] == b"200":
            return True, ""
        shown = line[1].decode("latin-1")[:3] if len(line) >= 2 else "no status"
        return False, f"GET {path} answered {shown}"

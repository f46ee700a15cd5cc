"""Starting, watching, signalling and re-adopting job processes on this host.

Each job runs under a tiny `/bin/sh` wrapper in its own session (so it survives a
daemon restart and can be signalled as a group) and, where the host allows, in its
own cgroup (see `contain`). The wrapper writes its pid before the job starts and the
job's exit status when it ends, into a status file with room set aside for both, so
a restarted daemon can tell a finished job (and when it finished) from a running or
a vanished one.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from nai_server.host import jobfiles, stderr_marks
from nai_server.host.output_helpers import Forked, ForkServer, as_owner

_log = logging.getLogger("nai.launch")

# $1 = the job's command, and what follows it the command's own arguments ($1...; the
# env_setup scripts of core.env_setup take the user's command there). The wrapper
# runs as the job's owner, in a directory the daemon owns, so it reports through a
# file the daemon opened: STATUS_FILE, root-owned, handed over as fd 2 and moved to
# fd 3 at once (fd 2 then goes to the log, like fd 1).
# The wrapper writes its pid there before the job starts and the job's exit status when
# it ends, one line each; the job itself gets the file closed and /dev/null as its
# input, so it cannot reach the file (nor reopen it through /proc, which checks the
# file's own permissions). The file is preallocated by the daemon, so the last line
# fits even on a disk the job filled. The wrapper's input is a pipe from the daemon:
# the job starts only once the daemon has put the wrapper into the job's cgroup and
# written "go" (at EOF, a daemon that died before that, it exits without running it).
# A trap *with a command* (not an ignore) keeps the wrapper alive through SIGTERM to the
# group, while the job still gets the default action; the wrapper then records the
# job's status. A signal that came before the job started (a cancel right after the
# launch) means it never starts: it would not have seen the signal. A wrapper that saw
# EOF records "unstarted": the daemon died before the job ran, which may then run later.
# "go N" (N: a descriptor the wrapper was given, 10 or more) makes the pipe N is a write
# end of the job's stderr, with a tagger at the other end (stderr_marks). dash cannot
# name a descriptor above 9 in a redirection: the job opens the pipe anew through /proc
# (the pipe is the owner's, so `>/dev/stderr` works in the job as well); N itself stays
# open in the job, harmlessly (one more way to write to its stderr). "go N CG" ("-" for
# no N): the job runs only inside the cgroup CG (its path below its hierarchy's root,
# `cgroup_tail`): the wrapper checks its own "0::" line in /proc/self/cgroup, which
# ends so (a cgroup namespace shows less of the path above, never more), and refuses
# to run the job anywhere else, whatever the daemon's write to cgroup.procs did.
WRAPPER = r"""
exec 3>&2 2>&1
stop=
trap 'stop=143' TERM
trap 'stop=130' INT
trap 'stop=129' HUP
echo "pid $$" >&3
read go err cg
[ -z "$stop" ] || { echo "exit $stop" >&3; exit "$stop"; }
[ "$go" = go ] || { echo unstarted >&3; exit 125; }
if [ -n "$cg" ]; then
  inside=
  while IFS= read -r line; do
    case "$line" in 0::*) [ "${line%"$cg"}" = "$line" ] || inside=1 ;; esac
  done </proc/self/cgroup
  [ -n "$inside" ] || { echo "nai: not started: not in the job's cgroup $cg"
                        echo "exit 125" >&3; exit 125; }
fi
job=$1
shift
if [ -n "$err" ] && [ -w "/proc/self/fd/$err" ]; then
  /bin/sh -c "$job" /bin/sh "$@" </dev/null 3>&- 2>"/proc/self/fd/$err"
else
  /bin/sh -c "$job" /bin/sh "$@" </dev/null 3>&-
fi
code=$?
echo "exit $code" >&3
exit "$code"
"""
STATUS_FILE = "run.status"
TAGGER_FILE = "tagger"  # the job's stderr tagger: "PID START_TICKS"
STATUS_ROOM = 4096  # bytes of the status file the daemon writes before the job starts
DRAIN_SECONDS = 2.0  # a job is seen to end once its tagger is done, or this long after
DRAIN_WAIT = 0.05  # seconds a look at an ended job waits for its tagger, the first time
PIPE_SIZE = 1 << 20  # bytes the job's stderr pipe holds (the kernel's default: 64 KiB)
# Written by the wrapper of older versions, inside a directory its owner controlled.
LEGACY_FILES = ("exit_status", "wrapper.pid")

@dataclass(frozen=True)
class Handle:
    """Identifies a job's wrapper process across daemon restarts (pids get reused)."""

    pid: int
    start_ticks: int  # /proc/<pid>/stat field 22: start time in clock ticks after boot

@dataclass(frozen=True)
class LaunchRequest:
    job_id: int
    job_dir: Path
    command: str  # run with /bin/sh -c, as the job's owner
    env: dict[str, str]
    cwd: Path
    uid: int | None = None  # None: run as the daemon's own user (personal mode)
    gid: int | None = None
    groups: tuple[int, ...] = ()
    cgroup: Path | None = None  # the job's cgroup, to start the wrapper in
    joins: tuple[Path, ...] = ()  # v1 cgroups (memory, cpu limits) it joins as well
    args: tuple[str, ...] = ()  # the command's $1...
    tag_stderr: bool = False  # tell its stderr from its stdout in the log (stderr_marks)

Status = Literal["running", "exited", "vanished"]

class Launcher(Protocol):
    """Where job processes run; a Slurm launcher can implement the same calls."""

    def start(self, request: LaunchRequest) -> Handle: ...

    def status(self, job_dir: Path, handle: Handle | None) -> tuple[Status, int | None]: ...

    def signal(self, handle: Handle, sig: int) -> None: ...

def proc_start_ticks(pid: int) -> int | None:
    """Start time of a live, non-zombie process, or None if there is none."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parens: split after the last ')'.
    fields = raw[raw.rindex(b")") + 2 :].split()
    if fields[0] in (b"Z", b"X"):  # zombie or dead: exited, not reaped yet
        return None
    return int(fields[19])

def proc_uid(pid: int) -> int | None:
    """Real uid of a process (for naming the owner of foreign GPU use)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Uid:"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None

def _status_value(job_dir: Path, key: str) -> int | None:
    """The number after `key` in the wrapper's status file, if it is complete."""
    raw = jobfiles.read_small(job_dir, STATUS_FILE)
    for line in (raw or b"").split(b"\n")[:-1]:  # only lines ended by a newline
        word, _, value = line.partition(b" ")
        if word == key.encode() and value.isdigit() and len(value) < 12:
            return int(value)
    return None


def _recorded(job_dir: Path, key: str, legacy: str) -> int | None:
    """What the wrapper recorded under `key`, or, for a job started by an older
    version, in the file `legacy`."""
    value = _status_value(job_dir, key)
    return _legacy_value(job_dir, legacy) if value is None else value


def read_exit_status(job_dir: Path) -> int | None:
    """The job's exit status once its wrapper recorded it."""
    return _recorded(job_dir, "exit", "exit_status")


def exit_time(job_dir: Path) -> float | None:
    """When the wrapper wrote the job's exit status (the status file's last change),
    if it did: the job's end, even one the daemon was down for."""
    if _status_value(job_dir, "exit") is None:
        return None
    try:
        with jobfiles.open_regular(job_dir, STATUS_FILE) as fd:
            return None if fd is None else os.fstat(fd).st_mtime
    except OSError:
        return None


def _legacy_value(job_dir: Path, name: str) -> int | None:
    raw = jobfiles.read_small(job_dir, name, 32)
    value = (raw or b"").strip()
    return int(value) if value.isdigit() and len(value) < 12 else None

class LocalLauncher:
    """Runs jobs as processes on this host, as their owners when the daemon is root."""

    def __init__(self) -> None:
        # Wrappers this daemon started: polling them reaps them (no zombies).
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        # Their stderr taggers, by the wrapper's pid; and when each wrapper was seen to
        # end while its tagger still wrote what the job had written last.
        self._taggers: dict[int, stderr_marks.Tagger] = {}
        self._ended: dict[int, float] = {}
        self._strays: list[stderr_marks.Tagger] = []  # taggers left reading, to reap
        # Forks the taggers (started on first use). Never as root: a root daemon's jobs
        # (personal mode) get taggers started on their own (stderr_marks.start_tagger).
        self._forks = ForkServer(as_daemon=os.geteuid() != 0)

    def start(self, request: LaunchRequest) -> Handle:
        # The job dir is the daemon's; O_NOFOLLOW all the same (DESIGN §11).
        flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        log = os.open(request.job_dir / "log", flags | os.O_APPEND, 0o640)
        status = go_read = go_write = -1
        tag = None
        try:
            if request.uid is not None:  # the owner may read their log on the server
                os.fchown(log, request.uid, request.gid if request.gid is not None else -1)
            status = os.open(request.job_dir / STATUS_FILE, flags | os.O_TRUNC, 0o600)
            _reserve(status, STATUS_ROOM)
            tag = _tagged_stderr(request, self._forks) if request.tag_stderr else None
            if tag is not None:  # for a daemon started again before the job ends
                _record_tagger(request.job_dir, tag.tagger.pid)
            go_read, go_write = os.pipe()
            argv = ["/bin/sh", "-c", WRAPPER, "nai-job", request.command, *request.args]
            if request.uid is not None:  # never Popen(user=): see as_owner
                if request.gid is None:
                    raise ValueError(f"job {request.job_id}: no group to run it with")
                argv = as_owner(argv, request.uid, request.gid, request.groups)
            proc = subprocess.Popen(
                argv,
                cwd=request.cwd,
                env=request.env,
                stdin=go_read,
                stdout=log,
                stderr=status,
                pass_fds=(tag.pipe,) if tag else (),
                start_new_session=True,
                close_fds=True,
                umask=0o022,
            )
        except BaseException:
            if go_write >= 0:
                os.close(go_write)
            if tag is not None:  # its pipe's last writer goes: it ends
                tag.close()
                tag.tagger.kill()  # unless its owner stopped it: no wait on them
                tag.tagger.wait()
            raise
        finally:
            for fd in (log, status, go_read):
                if fd >= 0:
                    os.close(fd)
        try:
            # Before the job runs: all it forks is inside, and limited.
            for cgroup in (request.cgroup, *request.joins) if request.cgroup else ():
                # A tagger gone already (its owner may kill it) is left out: once it is
                # reaped its pid may be another's, whom the job's end would kill.
                if tag is not None and tag.tagger.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        (cgroup / "cgroup.procs").write_text(f"{tag.tagger.pid}\n")
                (cgroup / "cgroup.procs").write_text(f"{proc.pid}\n")
            err = tag.pipe if tag is not None and stderr_marks.has_started(tag) else "-"
            cg = cgroup_tail(request.cgroup) if request.cgroup else ""
            go = f"go {err} {cg}".rstrip().encode() + b"\n"
            with contextlib.suppress(BrokenPipeError):  # stopped already: it said so
                os.write(go_write, go)
        except BaseException:
            # EOF: the wrapper exits without starting the job (it records "unstarted").
            # Waited for a moment only, then killed, and its tagger at once: both are the
            # owner's, who may have stopped them (SIGSTOP), and a wait on them would
            # last as long as they like, under the daemon's lock.
            os.close(go_write)
            try:
                proc.wait(timeout=DRAIN_SECONDS)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if tag is not None:
                tag.close()
                tag.tagger.kill()
                tag.tagger.wait()
            raise
        os.close(go_write)
        self._children[proc.pid] = proc
        if tag is not None:
            tag.close()
            self._taggers[proc.pid] = tag.tagger
        ticks = proc_start_ticks(proc.pid)
        return Handle(proc.pid, ticks if ticks is not None else -1)

    def status(self, job_dir: Path, handle: Handle | None) -> tuple[Status, int | None]:
        """running, exited (with the job's code), or vanished (no status left behind)."""
        self._reap_strays()
        if handle is not None:
            child = self._children.get(handle.pid)
            if child is not None:
                code = child.poll()
                if code is None or self._draining(handle.pid):
                    return "running", None
                del self._children[handle.pid]
                recorded = read_exit_status(job_dir)
                return "exited", recorded if recorded is not None else _code(code)
            if self._alive(handle):
                return "running", None
            # Started before this daemon did: its tagger, if it still runs, is drained
            # as a child's is (else the job's end would kill it as a leftover).
            if handle.pid not in self._taggers:
                adopted = _recorded_tagger(job_dir)
                if adopted is not None:
                    self._taggers[handle.pid] = adopted
            if self._draining(handle.pid):
                return "running", None
        code = read_exit_status(job_dir)
        if code is not None:
            return "exited", code
        return "vanished", None

    def _draining(self, pid: int) -> bool:
        """Whether the tagger of a job whose wrapper has ended still appends what the
        job wrote last. For at most DRAIN_SECONDS: a process the job left behind may
        hold its stderr open; the tagger is killed then (the end kills those processes,
        and only they are counted as what the job left running)."""
        tagger = self._taggers.get(pid)
        if tagger is None:
            return False
        now = time.monotonic()
        first = self._ended.setdefault(pid, now)
        # Most often it is done a moment after the wrapper: wait that moment here (a
        # job seen as running waits for the next tick, a second away when idle).
        if not stderr_marks.ended_within(tagger, DRAIN_WAIT if first == now else 0) \
                and now - first < DRAIN_SECONDS:
            return True
        del self._taggers[pid]
        self._ended.pop(pid, None)
        if tagger.poll() is None:
            tagger.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                tagger.wait(timeout=1.0)
            if tagger.poll() is None:
                self._strays.append(tagger)  # reaped later
        else:
            tagger.wait(timeout=0)  # reaped, or its pidfd closed
        return False

    def _reap_strays(self) -> None:
        ended = [t for t in self._strays if t.poll() is not None]
        for tagger in ended:
            with contextlib.suppress(subprocess.TimeoutExpired):
                tagger.wait(timeout=0)
        self._strays = [t for t in self._strays if t not in ended]

    @staticmethod
    def _alive(handle: Handle) -> bool:
        ticks = proc_start_ticks(handle.pid)
        return ticks is not None and (handle.start_ticks < 0 or ticks == handle.start_ticks)

    def signal(self, handle: Handle, sig: int) -> None:
        """Signal the job's whole process group (it is its own session leader)."""
        child = self._children.get(handle.pid)  # reaped, its pid may be another's now
        alive = child.returncode is None if child is not None else self._alive(handle)
        if alive:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(handle.pid, sig)

def _tagged_stderr(request: LaunchRequest,
                   forks: ForkServer) -> stderr_marks.Tagging | None:
    """The job's stderr as a pipe, with its tagger started on the other end; None when
    the job is to run untagged (its marks file is not a plain file of the daemon's
    making, or the tagger did not start)."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    marks = log = read_end = write_end = high = started_r = started_w = -1
    try:
        marks = os.open(request.job_dir / stderr_marks.MARKS_FILE, flags | os.O_CREAT, 0o640)
        st = os.fstat(marks)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            _log.warning("%s is not a plain file: job %s runs with its stderr untagged",
                         request.job_dir / stderr_marks.MARKS_FILE, request.job_id)
            return None
        log = os.open(request.job_dir / "log", flags)  # the tagger's own description
        read_end, write_end = os.pipe()
        with contextlib.suppress(OSError):  # fewer, larger reads for the tagger
            fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
        if request.uid is not None:  # theirs: the job may open /dev/stderr again
            gid = request.gid if request.gid is not None else -1
            os.fchown(marks, request.uid, gid)
            os.fchown(write_end, request.uid, gid)
        high = fcntl.fcntl(write_end, fcntl.F_DUPFD_CLOEXEC, 10)
        started_r, started_w = os.pipe()
        tagger = stderr_marks.start_tagger(forks, read_end, log, marks, started_w,
                                           request.uid, request.gid, request.groups)
        if tagger is None:
            return None
        tag = stderr_marks.Tagging(high, tagger, started_r)
        high = started_r = -1  # the caller's now
        return tag
    except OSError as exc:
        _log.warning("job %s runs with its stderr untagged: %s", request.job_id, exc)
        return None
    finally:
        for fd in (marks, log, read_end, write_end, high, started_r, started_w):
            if fd >= 0:
                os.close(fd)


def _record_tagger(job_dir: Path, pid: int) -> None:
    """Note the job's stderr tagger (its pid and start) in the job's directory, the
    daemon's own: a daemon started again finds it there."""
    ticks = proc_start_ticks(pid)
    if ticks is None:
        return
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(job_dir / TAGGER_FILE, flags, 0o600)
    try:
        os.write(fd, f"{pid} {ticks}\n".encode())
    finally:
        os.close(fd)


def _recorded_tagger(job_dir: Path) -> Forked | None:
    """The job's tagger from `_record_tagger`, if that very process still runs: held by
    a pidfd, so that waiting on it and killing it reach it and nothing else."""
    raw = jobfiles.read_small(job_dir, TAGGER_FILE) or b""
    words = raw.split()
    if len(words) != 2 or not all(w.isdigit() and len(w) < 20 for w in words):
        return None
    pid, ticks = int(words[0]), int(words[1])
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        return None
    if proc_start_ticks(pid) != ticks:  # gone, or its pid is another's now
        os.close(pidfd)
        return None
    return Forked(pid, pidfd, None)


def _reserve(fd: int, size: int) -> None:
    """Write `size` zero bytes and go back to the start: later writes over them need no
    new room, even on a full disk (the reader takes only lines ended by a newline)."""
    done = 0
    while done < size:
        done += os.write(fd, bytes(size - done))
    os.lseek(fd, 0, os.SEEK_SET)


def _code(returncode: int) -> int:
    # Popen reports death by signal N as -N; shells report 128+N.
    return 128 - returncode if returncode < 0 else returncode


def cgroup_tail(cgroup: Path) -> str:
    """`cgroup`'s path below the root of its hierarchy (the topmost folder above it that
    is a cgroup), as a process inside it reads it at the end of its "0::" line in
    /proc/self/cgroup; a folder that is not a cgroup: its whole path, which no such
    line ends with."""
    if not (cgroup / "cgroup.controllers").is_file():
        return str(cgroup)
    root = cgroup
    while root.parent != root and (root.parent / "cgroup.controllers").is_file():
        root = root.parent
    return "/" + str(cgroup.relative_to(root))


def never_started(job_dir: Path) -> bool:
    """Whether the wrapper exited without starting the job (no "go" ever came)."""
    raw = jobfiles.read_small(job_dir, STATUS_FILE)
    return b"unstarted" in (raw or b"").split(b"\n")[:-1]

def read_wrapper_pid(job_dir: Path) -> int | None:
    """The pid the job's wrapper recorded before the job started."""
    return _recorded(job_dir, "pid", "wrapper.pid")

def session_of(pid: int) -> int | None:
    try:
        return os.getsid(pid)
    except OSError:
        return None

"""A job's own directory under `<state>/jobs/<id>/` (DESIGN §7, §11).

The directory is the daemon's: its owner gets code/, output/, metrics.jsonl and the
log, and can replace none of the names, so the daemon never opens a link or a FIFO
there. A new job's directory is built under a temporary name and renamed into place
when complete, so no job ever starts on a partial copy, and it is never one that
exists already (that is moved aside, never taken over). A job that runs again after a
preemption keeps its directory: its code copy and output/ (where it saved its
checkpoint) stay as they are, missing pieces are made again, and log and
metrics.jsonl are appended to.

What the daemon takes out of a job directory (a half-started job's whole directory, a
folder a user left where the daemon's file or mount goes) is moved away at once and
removed in the background (`Discards`), as user_folders removes: never walked with
root's rights where a user could change it, and no step of the loop waits on it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import stat
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from nai_server.core.env import build_job_env
from nai_server.core.env_setup import job_launch
from nai_server.core.job import Job
from nai_server.host import code_snapshot, jobfiles, mounts, unix, user_folders
from nai_server.host.launchers.local import LEGACY_FILES, STATUS_FILE, TAGGER_FILE, LaunchRequest
from nai_server.host.outputs import Helper, kill
from nai_server.host.stderr_marks import MARKS_FILE
from nai_server.host.views import Views
from nai_server.store.blobs import BlobStore

log = logging.getLogger("nai.jobdir")

# Files in a job directory that a run leaves behind and the next run must not see.
RUN_LEFTOVERS = (STATUS_FILE, TAGGER_FILE, *LEGACY_FILES, "exit_status.tmp",
                 "wrapper.pid.tmp")
DISCARDED = ".discarded"  # under jobs/: what was taken out of job directories
Discard = Callable[[Path, str], None]  # takes a path out of the way, saying why


def launch_request(job: Job, gpus: tuple[int, ...], job_dir: Path, blobs: BlobStore,
                   personal: bool, cgroup: Callable[[], Path | None],
                   joins: Callable[[], tuple[Path, ...]] = tuple,
                   discard: Discard | None = None, views: Views | None = None
                   ) -> LaunchRequest:
    """What to start for a job on these GPUs: its own directory (made, or made safe to
    run in again, by `make`), its code (read-only links to the blobs in directories of
    its own, or a writable copy: `code_snapshot`), its environment, and its cgroup
    (made last). What stands in the way is handed to `discard` (default: `move_aside`).
    With `views`, its dataset and model are links to its owner's views of them."""
    account = None if personal else unix.unix_account(job.user)
    if account is None and not personal and os.geteuid() == 0:
        raise unix.NoAccount(job.user, "a job never runs as root: submit it again once "
                                       "the account is back")
    uid = gid = None
    groups: tuple[int, ...] = ()
    if account is not None and os.geteuid() == 0:
        uid, gid = account.pw_uid, account.pw_gid
        groups = tuple(unix.unix_groups(job.user))
    make(job, job_dir, blobs, uid, gid, personal=personal, discard=discard, views=views)
    dirs = {f"{kind}_dir": str(job_dir / kind) for kind in mounts.MOUNTS if job.pin(kind)}
    home = account.pw_dir if account else os.environ.get("HOME", "/")
    base = {
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "HOME": home, "USER": job.user, "LOGNAME": job.user,
        "SHELL": "/bin/sh", "LANG": os.environ.get("LANG", "C.UTF-8"),
        "PYTHONUNBUFFERED": "1",  # logs arrive as they are printed
    }
    env = build_job_env(job_id=job.id, job_dir=str(job_dir), gpu_indices=gpus,
                        user_env=job.spec.env, base_env=base, **dirs)
    # The shell comes from passwd; the user's own files (profile, venv) are read only by
    # the job's processes, as the user.
    shell = account.pw_shell if account else _own_shell()
    script, args, env = job_launch(job.spec.env_setup, command=job.spec.command, env=env,
                                   code_dir=str(job_dir / "code"), home=home, shell=shell)
    return LaunchRequest(job_id=job.id, job_dir=job_dir, command=script, args=args,
                         env=env, cwd=job_dir / "code", uid=uid, gid=gid, groups=groups,
                         cgroup=cgroup(), joins=joins(), tag_stderr=True)


def _own_shell() -> str:
    """The daemon's own user's shell (a personal server runs jobs as that user)."""
    try:
        return pwd.getpwuid(os.getuid()).pw_shell
    except KeyError:
        return os.environ.get("SHELL", "/bin/sh")


def make(job: Job, job_dir: Path, blobs: BlobStore, uid: int | None, gid: int | None, *,
         personal: bool, discard: Discard | None = None, views: Views | None = None) -> None:
    """The job's directory, ready for a run: built anew, or reclaimed after a
    preemption; the job's owner (`uid`) gets what is theirs in it."""
    if job.runs and os.path.lexists(job_dir):
        reclaim(job_dir, discard)
        fill(job, job_dir, blobs, uid, gid, views)
    else:
        build(job, job_dir, blobs, uid, gid, discard, views)
    if uid is not None and not personal:  # its owner's jobs pass through; no one else
        unix.traversable_by(job_dir, uid)
    else:
        os.chmod(job_dir, 0o700 if personal else 0o711)


def build(job: Job, job_dir: Path, blobs: BlobStore, uid: int | None, gid: int | None,
          discard: Discard | None = None, views: Views | None = None) -> None:
    """A new job's directory, complete before it gets its name."""
    if os.path.lexists(job_dir):
        move_aside(job_dir, "a new job never takes over a directory already there")
    # Names that start with the id, so the store's id floor counts them too.
    building = job_dir.with_name(f".{job.id}.new")
    if os.path.lexists(building):  # left by a crash while building
        (discard or move_aside)(building, "left by a start that did not finish")
    building.mkdir(mode=0o700)
    fill(job, building, blobs, uid, gid, views)
    os.rename(building, job_dir)


def fill(job: Job, job_dir: Path, blobs: BlobStore, uid: int | None, gid: int | None,
         views: Views | None = None) -> None:
    """Make what is missing of a job directory: code, output/, metrics.jsonl, mounts."""
    code = job_dir / "code"
    if not os.path.lexists(code):
        if job.code_tree:  # links to the blobs where safe (code_snapshot), else a copy
            code_snapshot.snapshot(blobs, job.code_tree, code, uid, gid,
                                   writable=job.spec.code == code_snapshot.WRITABLE)
        else:
            code.mkdir()
            if uid is not None:  # built by the daemon, not yet seen by the job
                chown_tree(code, uid, gid if gid is not None else -1)
    output = job_dir / "output"
    if not os.path.lexists(output):
        output.mkdir(mode=0o700)
        if uid is not None:
            os.chown(output, uid, gid if gid is not None else -1)
    fd = os.open(job_dir / "metrics.jsonl",
                 os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                 0o640)
    try:
        if uid is not None:
            os.fchown(fd, uid, gid if gid is not None else -1)
    finally:
        os.close(fd)
    # The mounts stay the daemon's (the links share the blobs' inodes): the owner's view
    # of the version (built once for all their jobs), or links of the job's own.
    for kind in mounts.MOUNTS:
        pin = job.pin(kind)
        if pin is not None and views is not None:
            views.link(job.user, uid, pin.tree_id, job_dir / kind)
        elif pin is not None:
            mounts.mount(blobs, pin.tree_id, job_dir / kind)


def move_aside(path: Path, why: str) -> None:
    """Rename a job directory out of the way, for an admin to look at; never delete it
    (it may hold someone's data)."""
    aside = path.with_name(f"{path.name}.stale-{time.time_ns()}")
    os.rename(path, aside)
    log.warning("%s was moved aside to %s: %s", path, aside, why)


def reclaim(job_dir: Path, discard: Discard | None = None) -> None:
    """Make a job directory from an earlier run safe to start in again.

    A directory made by an older version belonged to the job's owner, who could have
    changed it while the job waited: none of log, log.stderr, metrics.jsonl, code or
    output may be a link, and the files must be plain files, not hard links to files of
    others (the run gives them to the job's owner). A folder at a file's name or a
    mount's is the owner's to fill (a FIFO, a link swapped in, another's folder mounted
    there): it goes to `discard` (default: `move_aside`), never walked here. The
    directory is the daemon's from now on."""
    discard = discard or move_aside
    st = os.lstat(job_dir)
    if not stat.S_ISDIR(st.st_mode):
        raise RuntimeError(f"{job_dir} is not the job's directory any more")
    os.chown(job_dir, os.geteuid(), os.getegid(), follow_symlinks=False)
    os.chmod(job_dir, 0o700)
    # From here on only the daemon changes the names in it (what is below them may
    # still be the owner's).
    files = ("log", MARKS_FILE, "metrics.jsonl")
    for name in ("code", "output", *files):
        path = job_dir / name
        if path.is_symlink():
            path.unlink()  # the link, never what it points to
        elif name in files and path.is_dir():
            discard(path, f"a folder stood where the job's {name} goes")
        elif name in files and path.exists() and not path.is_file():
            path.unlink()  # a FIFO or socket: opening it would block or fail
        elif name in files and path.exists() and jobfiles.planted(st, path.lstat()):
            path.unlink()  # a hard link to another's file: the run would give it away
    for name in RUN_LEFTOVERS:
        (job_dir / name).unlink(missing_ok=True)
    for name in mounts.MOUNTS:  # mounted afresh: whatever is there now is not ours
        path = job_dir / name
        if os.path.isdir(path) and not os.path.islink(path):
            discard(path, f"the {name} of an earlier run is mounted afresh")
        elif os.path.lexists(path):
            path.unlink()


def chown_tree(root: Path, uid: int, gid: int) -> None:
    """Give the job's files to its owner (no symlink is followed)."""
    os.chown(root, uid, gid, follow_symlinks=False)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in (*dirnames, *filenames):
            os.chown(os.path.join(dirpath, name), uid, gid, follow_symlinks=False)


class Discards:
    """Where what is taken out of job directories goes (`Discard`): renamed at once
    into jobs/.discarded/, then removed by a thread of its own (user_folders.remove:
    a user's folder emptied as its owner, each helper for at most `timeout` seconds).
    What cannot be removed so stays there, for an admin, and is tried again at the
    next start."""

    def __init__(self, jobs_dir: Path, timeout: float) -> None:
        self.root = jobs_dir / DISCARDED
        self.timeout = timeout
        self.running: set[Helper] = set()  # the helpers emptying a folder now
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="nai-discard")
        self._lock = threading.Lock()  # jobs/.discarded/ made, or removed once empty
        self._closed = False
        if self.root.is_dir():  # an earlier daemon's, not yet removed
            for name in sorted(os.listdir(self.root)):
                self._pool.submit(self._remove, self.root / name)

    def __call__(self, path: Path, why: str) -> None:
        aside = self.root / f"{path.name}-{time.time_ns()}"
        with self._lock:
            # Searchable, as jobs/ is: each helper reaches its owner's folder by its path.
            self.root.mkdir(mode=0o711, exist_ok=True)
            os.chmod(self.root, 0o711)
            os.rename(path, aside)
        log.info("%s moved to %s, to be removed: %s", path, aside, why)
        self._pool.submit(self._remove, aside)

    def _remove(self, path: Path) -> None:
        try:
            if user_folders.remove(path, self.timeout, self.running):
                with self._lock, contextlib.suppress(OSError):
                    self.root.rmdir()  # unless more is there
                return
        except OSError as exc:
            log.warning("%s: %s", path, exc)
        if self._closed:  # its helper was stopped: the next start tries again
            return
        log.warning("%s could not be removed safely (what its user left there stays); "
                    "it is left for an admin", path)

    def close(self) -> None:
        """Stop: the helpers running are killed, the rest waits for the next start."""
        self._closed = True
        self._pool.shutdown(wait=False, cancel_futures=True)
        for helper in list(self.running):
            kill(helper)

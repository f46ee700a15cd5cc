"""Emptying a folder its user controls, as that user (DESIGN §11).

The daemon never walks a user's folder with root's rights: as root, `shutil.rmtree`
opens each subdirectory by name after checking it, so one swapped meanwhile for a
symlink is followed (to a device, whose opening may act) and one swapped for a FIFO
blocks it for good; and it deletes through whatever is mounted there (another's files).
A helper running as the folder's user, with its groups, removes what the folder holds,
killed (with what it started) after a deadline; the daemon then removes the folder
itself with `rmdir`, which fails, touching nothing, if the user put anything back.
What is the daemon's own is removed through descriptors (`remove`): each directory opened
with O_NOFOLLOW|O_DIRECTORY beneath the one before, so no link is followed and no FIFO
opened, and a folder another account owns is emptied as that account, never walked.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from nai_server.host.outputs import Helper, RunAs, kill, owner_argv

# Run with -I -S (nothing of the user's environment imported); argv[1]: the folder.
# Folders of the user's they made unwritable (or unreadable) are opened up first, as
# the user: root's rmtree never needed to, and what the user could remove must go.
_EMPTY = """\
import os, shutil, sys
def open_up(path):
    try:
        os.chmod(path, 0o700)
        with os.scandir(path) as entries:
            folders = [e.path for e in entries if e.is_dir(follow_symlinks=False)]
    except (OSError, RecursionError):
        return
    for folder in folders:
        open_up(folder)
os.chdir(sys.argv[1])
open_up(".")
for name in os.listdir("."):
    try:
        if os.path.isdir(name) and not os.path.islink(name):
            shutil.rmtree(name)
        else:
            os.unlink(name)
    except OSError:
        pass
"""


def empty(folder: Path, run_as: RunAs, timeout: float,
          running: set[Helper] | None = None) -> None:
    """Remove what `folder` holds, as `run_as`, for at most `timeout` seconds. What the
    helper could not remove stays (the caller's `rmdir` of the folder then fails). The
    helper is in `running` while it runs, for whoever must stop it early."""
    proc = subprocess.Popen(owner_argv([sys.executable, "-I", "-S", "-c", _EMPTY,
                                        str(folder)], run_as),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, cwd="/",
                            env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
                            close_fds=True, start_new_session=True)
    if running is not None:
        running.add(proc)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        kill(proc)
        proc.wait()
    finally:
        if running is not None:
            running.discard(proc)


def remove_tree(path: Path, user_folders: Sequence[str], timeout: float,
                running: set[Helper] | None = None) -> bool:
    """Remove `path`, a directory the daemon owns that holds the folders named in
    `user_folders`, which its users own: each is emptied as the account that owns it
    and removed with `rmdir`, and only then the rest, the daemon's own, as the daemon.
    False, leaving the rest of `path` as it is, when a user's folder could not be
    emptied (`remove` empties a folder of another account's as that account)."""
    for name in user_folders:
        if not remove(path / name, timeout, running):
            return False
    return remove(path, timeout, running)


_OPEN_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def remove(path: Path, timeout: float, running: set[Helper] | None = None) -> bool:
    """Remove `path`, in a directory the daemon owns, whatever it is: a directory of
    the daemon's is walked through descriptors (a link is unlinked, never followed;
    nothing but a directory is opened), and a folder that another account owns is
    emptied as that account (`empty`) and then removed with `rmdir`; one of the
    daemon's that anyone may write in (a sticky /tmp-like folder moved there) holds
    others' files, and stays. All of it within `timeout` seconds; False when something
    could not be removed (it stays, with what holds it: the caller moves it aside or
    leaves it for an admin)."""
    try:
        parent = os.open(path.parent, _OPEN_DIR)
    except FileNotFoundError:
        return True
    try:
        return _remove_at(parent, path, time.monotonic() + timeout, running)
    finally:
        os.close(parent)


def _remove_at(parent: int, path: Path, deadline: float,
               running: set[Helper] | None) -> bool:
    name = path.name
    try:
        st = os.stat(name, dir_fd=parent, follow_symlinks=False)
    except FileNotFoundError:
        return True
    if not stat.S_ISDIR(st.st_mode):
        os.unlink(name, dir_fd=parent)
        return True
    if st.st_uid != os.geteuid():  # another's folder: theirs to empty, never walked
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        empty(path, RunAs(st.st_uid, st.st_gid), left, running)
    else:
        try:
            fd = os.open(name, _OPEN_DIR, dir_fd=parent)
        except OSError:  # the daemon's own directories change under nobody else
            return False
        try:
            if not os.path.samestat(st, os.fstat(fd)) or st.st_mode & 0o002:
                return False
            if stat.S_IMODE(st.st_mode) & 0o700 != 0o700:
                os.fchmod(fd, 0o700)  # a mount's 0555 (a daemon not root needs to write)
            done = True
            for entry in os.listdir(fd):
                done = _remove_at(fd, path / entry, deadline, running) and done
            if not done:
                return False
        except RecursionError:
            return False
        finally:
            os.close(fd)
    try:
        os.rmdir(name, dir_fd=parent)
    except OSError:  # something put back, or a mount point
        return False
    return True

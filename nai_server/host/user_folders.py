"""Emptying a folder its user controls, as that user (DESIGN §11).

The daemon never walks a user's folder with root's rights: as root, `shutil.rmtree`
opens each subdirectory by name after checking it, so one swapped meanwhile for a
symlink is followed (to a device, whose opening may act) and one swapped for a FIFO
blocks it for good; and it deletes through whatever is mounted there (another's files).
A helper running as the folder's user, with its groups, removes what the folder holds,
killed (with what it started) after a deadline; the daemon then removes the folder
itself with `rmdir`, which fails, touching nothing, if the user put anything back.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from nai_server.host.outputs import Helper, RunAs, kill, owner_argv

# Run with -I -S (nothing of the user's environment imported); argv[1]: the folder.
_EMPTY = """\
import os, shutil, sys
os.chdir(sys.argv[1])
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
    False, leaving `path` whole, when a user's folder could not be emptied."""
    for name in user_folders:
        folder = path / name
        try:
            st = os.lstat(folder)
        except FileNotFoundError:
            continue
        if not stat.S_ISDIR(st.st_mode):
            continue  # rmtree unlinks it, following nothing
        if st.st_uid == os.geteuid():  # the daemon's own account's (personal mode)
            shutil.rmtree(folder, ignore_errors=True)
            continue
        empty(folder, RunAs(st.st_uid, st.st_gid), timeout, running)
        try:
            os.rmdir(folder)
        except OSError:
            return False
    shutil.rmtree(path, ignore_errors=True)
    return True

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

import subprocess
import sys
from pathlib import Path
from typing import Any

from nai_server.host.outputs import Helper, RunAs, kill

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
    as_user: dict[str, Any] = {}
    if run_as.uid is not None:
        as_user = {"user": run_as.uid, "group": run_as.gid,
                   "extra_groups": list(run_as.groups)}
    proc = subprocess.Popen([sys.executable, "-I", "-S", "-c", _EMPTY, str(folder)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, cwd="/",
                            env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
                            close_fds=True, start_new_session=True, **as_user)
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

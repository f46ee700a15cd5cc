"""The store's files as gc sees them (gc.py): when each was last promised to someone.

A blob's or tree's atime is set to now whenever the store tells someone it has it
(`refresh`), with its mtime kept (a tree's mtime is what its downloads show; a blob's,
what its hard links in jobs' folders show). The store's own bulk reads (verify, gc)
use `open_noatime`, so that reading everything does not make everything look just
promised.
"""

from __future__ import annotations

import contextlib
import os
import stat
import time

from nai_server.core.store_gc import needs_refresh


def refresh(path: str) -> int | None:
    """The size of the regular file at `path` (never through a symlink), whose atime is
    now set to now (its mtime kept); None if there is none. Call with `sweep_lock`."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except (FileNotFoundError, NotADirectoryError):
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    now = time.time_ns()
    if needs_refresh(st.st_mtime_ns, st.st_atime_ns, now):  # else gc allows for it
        with contextlib.suppress(OSError):  # a store we may not write: kept by its grace
            os.utime(path, ns=(now, st.st_mtime_ns), follow_symlinks=False)
    return st.st_size


def open_noatime(path: str) -> int:
    """A read-only descriptor of the file at `path` (never through a symlink) whose
    reads leave its atime alone: a verification or a gc reading every blob and tree
    must not make them look just promised (see `refresh`). Without
    O_NOATIME's right (not the owner), an ordinary open: such reads only make gc keep
    a file longer."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        return os.open(path, flags | getattr(os, "O_NOATIME", 0))
    except PermissionError:
        return os.open(path, flags)

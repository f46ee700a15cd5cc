"""Free space in the state directory, against the configured floor (limits.min_free_space).

A full disk must not cost a job its exit code, nor answer an upload with "internal
server error": below the floor, new uploads are refused with 507 while running jobs
go on, and `nai-server check` warns; a write that hits ENOSPC anyway answers 507 too.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from nai_server.config import ServerConfig
from nai_server.core.spec import parse_size
from nai_server.core.units import format_size


def free_bytes(path: Path) -> int | None:
    """Bytes an unprivileged writer may still use on `path`'s filesystem."""
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def below_floor(config: ServerConfig) -> str | None:
    """Why new data is refused now, or None while the state dir has room."""
    floor = parse_size(config.limits.min_free_space)
    free = free_bytes(config.state)
    if not floor or free is None or free >= floor:
        return None
    return (f"server disk full: only {format_size(free)} free in the state directory "
            f"{config.state}, below its floor of {format_size(floor)} "
            f"(limits.min_free_space); uploads are refused until space is freed, "
            f"running jobs go on")


def is_disk_full(exc: BaseException | None) -> bool:
    """Whether an error was (or was caused by) a write that found no space."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


DISK_FULL_MESSAGE = ("server disk full: the server has no space left to store this; "
                     "ask its admin to free space, then retry")

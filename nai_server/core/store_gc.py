"""The pure part of `nai-admin store gc`: what counts as a reference, and which stored
file is old enough to go. No I/O here; the walk over the store is
nai_server.store.gc.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from nai_server.core.trees import is_digest

# A running job stores outputs ahead of its end (host/collection.py) and its end's
# collection finds blobs already stored: everything stored or found since a little
# before the oldest running job started is kept, however long that job runs. The slack
# covers the file system's coarse clock against the daemon's.
START_SLACK_NS = 60 * 10**9
NS = 10**9
# A file refreshed less than this long ago is not refreshed again (a push of a million
# files would otherwise write a million inodes each time it asks what is missing); gc
# counts a refreshed file (atime after mtime) as touched this much later than its atime
# says, so nothing promised goes before its grace is over (`last_touched_ns`).
REFRESH_EVERY_NS = 3600 * NS


def digests_in(value: Any) -> Iterator[str]:
    """Every sha256 digest anywhere in a stored document (keys and values, at any
    depth): a tree id kept under a field that gc was not told about still counts."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if len(item) == 64 and is_digest(item):
                yield item
        elif isinstance(item, Mapping):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)


def cutoff_ns(fs_now_ns: int, grace_s: float, oldest_running_start: float | None,
              wall_now_ns: int | None = None) -> int:
    """The time before which a file unreferenced must have been stored, and last
    promised to a client, to be deleted: `grace_s` before now (the earlier of the file
    system's clock and the daemon's, `wall_now_ns`, which stamps refreshes: a clock
    behind the other never makes a promise look old), and never after the oldest
    running job started (less START_SLACK_NS)."""
    now = fs_now_ns if wall_now_ns is None else min(fs_now_ns, wall_now_ns)
    cutoff = now - int(grace_s * NS)
    if oldest_running_start is not None:
        cutoff = min(cutoff, int(oldest_running_start * NS) - START_SLACK_NS)
    return cutoff


def last_touched_ns(mtime_ns: int, atime_ns: int) -> int:
    """When a stored file was last written or promised, at the latest: the store sets a
    blob's or tree's atime (never its mtime, which downloads show) when it tells someone
    it has it, unless it did so less than REFRESH_EVERY_NS before (`needs_refresh`), so
    a refreshed file (atime after mtime) may have been promised until that much later."""
    if atime_ns > mtime_ns:
        return atime_ns + REFRESH_EVERY_NS
    return mtime_ns


def needs_refresh(mtime_ns: int, atime_ns: int, now_ns: int) -> bool:
    """Whether a promise now must set the file's atime: not if it was refreshed (atime
    after mtime) less than REFRESH_EVERY_NS ago, which `last_touched_ns` allows for."""
    return not (atime_ns > mtime_ns and atime_ns >= now_ns - REFRESH_EVERY_NS)


def may_delete(name: str, kept: set[str] | frozenset[str], touched_ns: int,
               cutoff: int) -> bool:
    """True if the stored file `name` (a digest) is neither referenced (`kept`) nor
    touched at or after `cutoff`."""
    return name not in kept and touched_ns < cutoff

"""What one job's passes over its output/ have stored, so that the next reads only what
changed (outputs.collect and store_ahead, with output_walk's `ask`).

A pass lists every file with its inode and ctime; the daemon answers with a bitmap of
the files it wants sent, leaving out each one an earlier pass stored the bytes of under
the same inode, ctime and size, sent as settled (output_walk.settled). The kernel sets
a file's ctime on every change, and no user can set it back: a rewrite that keeps the
size and restores the mtime is still read again.
"""

from __future__ import annotations

import os
import select
import time
from dataclasses import dataclass, field
from typing import IO, Any

from nai_server.core.trees import MAX_SIZE, Limits, TreeError

Known = tuple[int, int, int, str]  # inode, ctime in ns, size, sha256


@dataclass
class Seen:
    """What one job's passes over its output/ stored, by path: the Known of each file
    sent as settled (output_walk), whose bytes are durable in the store. The next pass
    asks only for the files listed otherwise."""

    files: dict[str, Known] = field(default_factory=dict)
    listing_seconds: float = 0.0  # the last pass's, until it knew what to read


def known(files: list[dict[str, Any]], seen: Seen | None) -> list[Known | None]:
    """For each listed file, what `seen` holds of it if it is listed with the same
    identity (inode, ctime, size), else None: its bytes must be read."""
    if seen is None:
        return [None] * len(files)
    found = []
    for entry in files:
        was = seen.files.get(entry["path"])
        same = was is not None and ident(entry) == was[:2] and entry["size"] == was[2]
        found.append(was if same else None)
    return found


def ident(entry: dict[str, Any]) -> tuple[int, int] | None:
    """A listed file's (inode, ctime in ns), if the reader listed it well-formed."""
    said = entry.get("id")
    if type(said) is list and len(said) == 2 and all(type(n) is int for n in said):
        return said[0], said[1]
    return None


def ask(questions: IO[bytes], found: list[Known | None], deadline: float) -> None:
    """Tell the reader which files to send (output_walk's bitmap), by `deadline`: it
    runs as its owner, who may stop it, so nothing here waits on it unbounded."""
    bits = bytearray((len(found) + 7) // 8)
    for index, already in enumerate(found):
        if already is None:
            bits[index >> 3] |= 1 << (index & 7)
    fd = questions.fileno()
    os.set_blocking(fd, False)
    ready = select.poll()
    ready.register(fd, select.POLLOUT)
    view = memoryview(bits)
    while view:
        left = deadline - time.monotonic()
        if left <= 0 or not ready.poll(left * 1000):
            raise TreeError([("", "the output reader stopped taking questions")])
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            continue
        except OSError:
            raise TreeError([("", "the output reader stopped taking questions")]) from None
    questions.close()


def check_ahead(listed: list[Any], limits: Limits) -> None:
    """What a pass while the job runs needs of the listing before it stores any bytes
    (the whole tree's rules, paths and links, are the end's collection's to judge: a
    pass records no tree): well-formed entries, within the counts and sizes."""
    if len(listed) > limits.max_entries:
        raise TreeError([("", f"tree has {len(listed)} entries, the limit is "
                              f"{limits.max_entries}")])
    total = 0
    for entry in listed:
        if type(entry) is not dict or type(entry.get("path")) is not str \
                or entry.get("kind") not in ("file", "symlink"):
            raise TreeError([("", "the output reader sent a malformed listing")])
        if entry["kind"] == "file":
            size = entry.get("size")
            if type(size) is not int or not 0 <= size <= MAX_SIZE:
                raise TreeError([("", "the output reader sent a malformed listing")])
            total += size
    if total > limits.max_total_size:
        raise TreeError([("", f"outputs hold {total} bytes, the limit is "
                              f"{limits.max_total_size}")])

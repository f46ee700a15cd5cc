"""The temporaries of `nai pull`: named after their writer and content, so a later pull
can tell one a killed pull left behind, and resume it from where it stopped.

A file is written to `.nai-pull-<pid>.<host>-<sha256[:16]>-<random>` in its folder and
renamed into place once verified. A temporary is abandoned when its writer on this
host is gone, when it was untouched for a day, or (no writer in its name: an older
nai) a minute before the pull that finds it began. An abandoned one of a file still
wanted is resumed: its bytes are kept and only the rest is asked for
(`GET /v1/trees/{id}/file` with `Range: bytes=N-`); the whole file is verified as
always, so a damaged partial only costs a download from byte 0.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
import stat
import string
from collections.abc import Callable
from pathlib import Path

from nai_server.protocol import TreeEntryModel
from nai_tui.remote.client import ServerClient
from nai_tui.sync.hashcache import CHUNK
from nai_tui.sync.pull_stream import file_from

log = logging.getLogger("nai.sync")

TEMP_PREFIX = ".nai-pull-"
# Which machine wrote a temporary: a pid means something only on its own host (a dest
# on a shared file system is seen by several).
HOST = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]
ABANDONED_AFTER = 24 * 3600.0  # a temporary untouched this long is dead whoever wrote it
TAG_LENGTH = 16  # hex digits of the content's sha256 in a temporary's name


def temp_prefix(digest: str = "") -> str:
    """The start of this process's temporary names (for the content `digest`)."""
    tag = f"{digest[:TAG_LENGTH]}-" if digest else ""
    return f"{TEMP_PREFIX}{os.getpid()}.{HOST}-{tag}"


def content_tag(name: str) -> str | None:
    """The sha256 prefix a temporary's name carries, if it names one."""
    parts = name[len(TEMP_PREFIX):].split("-")
    tag = parts[1] if len(parts) > 2 else ""
    ok = len(tag) == TAG_LENGTH and all(c in string.hexdigits for c in tag)
    return tag.lower() if ok else None


def abandoned(name: str, mtime: float, started: float) -> bool:
    """Whether the temporary `name` (modified at `mtime`) was left by a pull that is no
    longer running: written on this host by a process that is gone, older than a day,
    or (no writer in its name: an older nai) untouched since a minute before `started`."""
    writer, _, host = name[len(TEMP_PREFIX):].partition("-")[0].partition(".")
    if mtime < started - ABANDONED_AFTER:
        return True
    if not (writer.isdigit() and host):
        return mtime < started - 60
    if host != HOST:
        return False
    if int(writer) == os.getpid():
        return mtime < started  # ours, from an earlier pull of this process
    try:
        os.kill(int(writer), 0)
    except ProcessLookupError:
        return True
    except (OSError, OverflowError):
        return False
    return False


def sweep(folder: Path, started: float) -> tuple[list[tuple[str, str]], int]:
    """The abandoned temporaries in `folder`: those holding the start of some content
    are returned as (content tag, path) to resume; the others are removed (and
    counted)."""
    partials: list[tuple[str, str]] = []
    removed = 0
    try:
        with os.scandir(folder) as found:
            temps = [d for d in found if d.name.startswith(TEMP_PREFIX)]
        for d in temps:
            try:
                st = d.stat(follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode) or not abandoned(d.name, st.st_mtime, started):
                    continue
                tag = content_tag(d.name)
                if tag is not None and stat.S_ISREG(st.st_mode) and st.st_size:
                    partials.append((tag, d.path))
                    continue
                os.unlink(d.path)
            except FileNotFoundError:  # its writer finished after all
                continue
            removed += 1
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("could not clear old temporary files in %s (%s)", folder, exc)
    return partials, removed


class Useless(Exception):
    """A partial download that cannot be resumed (complete already, or not a prefix of
    the file): it is dropped and the file fetched whole."""


def complete(client: ServerClient, tree_id: str, e: TreeEntryModel, path: str,
             advance: Callable[[int, bool], None]) -> None:
    """Append to the partial download of `e` at `path` the rest of the file, and verify
    the whole. `advance(n, received)` is told of bytes found there and received.
    Raises Useless when it cannot be completed, ConnectionFailed when the download
    broke off again (what arrived is kept)."""
    fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "r+b") as out:
        hasher, have = hashlib.sha256(), 0
        while piece := out.read(CHUNK):
            hasher.update(piece)
            have += len(piece)
        if have == e.size and hasher.hexdigest() == e.sha256:  # complete: killed at the end
            os.fchmod(out.fileno(), e.mode)
            return
        if have >= e.size:
            raise Useless
        advance(have, False)
        with file_from(client, tree_id, e.path, have) as (start, chunks):
            if start != have:  # the server sent the whole file: begin again
                out.seek(0)
                out.truncate()
                hasher = hashlib.sha256()
            for piece in chunks:
                hasher.update(piece)
                out.write(piece)
                advance(len(piece), True)
        os.fchmod(out.fileno(), e.mode)
    if hasher.hexdigest() != e.sha256:
        raise Useless

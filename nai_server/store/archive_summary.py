"""What the store needs of each archive file at start, kept apart from it.

Opening a store with 100,000 archived jobs parsed every monthly archive (JSON) and
built each job's summary (`history.JobFacts`) in Python: seconds. Each archive now has
a summary file (`archive-summaries/jobs-YYYY-MM.summary`): the highest id, the per-(user,
state) tally and the jobs' facts, in `marshal`'s format (plain tuples, strings and
numbers; loading it runs no code). It names the archive file it was made from by its
size and modification time (to the nanosecond): an archive replaced since (a later
batch, a restored backup, an edit) is parsed again and its summary made anew. One that cannot
be read (another Python version, a cut file) is the same as none.
"""

from __future__ import annotations

import marshal
import os
import sys
from pathlib import Path
from typing import Any

from nai_server.store import atomic

FORMAT = 3  # 3: each fact ends with the GPUs its job held elsewhere (Slurm)
_VERSION = (FORMAT, *sys.version_info[:2])

Tally = dict[tuple[str, str], int]


def path_of(archive: Path) -> Path:
    """`<state>/archive-summaries/jobs-YYYY-MM.summary` for `<state>/archive/jobs-YYYY-MM.json`
    (not in archive/, which holds the archives alone)."""
    return archive.parent.with_name("archive-summaries") / f"{archive.stem}.summary"


def _key(archive: Path) -> tuple[int, int] | None:
    """Size and modification time, not the inode: a copy that keeps times (`cp -a`,
    rsync, a restore of the whole state dir) keeps its summaries."""
    try:
        st = os.stat(archive)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns)


def load(archive: Path) -> tuple[int, Tally, list[tuple[Any, ...]]] | None:
    """(highest id, tally, facts) of the archive as it is now, or None when its summary
    is missing, stale or unreadable."""
    key = _key(archive)
    try:
        raw = path_of(archive).read_bytes()
        version, made_of, high, counts, facts = marshal.loads(raw)
    except (OSError, ValueError, EOFError, TypeError):
        return None
    if version != _VERSION or key is None or tuple(made_of) != key:
        return None
    if not isinstance(high, int) or not isinstance(counts, tuple) or not isinstance(
            facts, list):
        return None
    return high, dict(counts), facts


def save(archive: Path, high: int, counts: Tally, facts: list[tuple[Any, ...]]) -> None:
    """The summary of the archive file as it is on disk now. Best effort: a summary that
    could not be written is made again at the next start."""
    key = _key(archive)
    if key is None:
        return
    try:
        raw = marshal.dumps((_VERSION, key, high, tuple(counts.items()), facts))
        path_of(archive).parent.mkdir(mode=0o700, exist_ok=True)
        atomic.atomic_write(path_of(archive), raw)
    except (OSError, ValueError):
        path_of(archive).unlink(missing_ok=True)

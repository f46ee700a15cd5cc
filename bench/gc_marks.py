"""`nai-admin store gc`'s mark with 100,000 archived jobs: how long it holds the
daemon's lock (which every submit and the scheduler's tick wait for), before and after
the archived jobs' trees were read outside it, in the same run on the same store.

"before" is the mark as it was (every archived job's summary walked under the lock),
kept here as the baseline; "after" is `nai_server.store.gc.marks_in`. Both must name
the same trees.

    .venv/bin/python bench/gc_marks.py [--archived N] [--hot N] [--rounds N]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from store import seed_archive

from nai_server.core import store_gc as rules
from nai_server.store.atomic import CommitLock
from nai_server.store.db import TinyDbStore
from nai_server.store.gc import Marks, marks_in


class TimedLock(CommitLock):
    """The daemon's lock, adding up how long its outermost holders keep it."""

    def __init__(self) -> None:
        super().__init__()
        self.held = 0.0
        self._since = 0.0

    def __enter__(self) -> CommitLock:
        super().__enter__()
        if self._local.depth == 1:
            self._since = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._local.depth == 1:
            self.held += time.perf_counter() - self._since
        super().__exit__(*exc)


def marks_before(store: TinyDbStore, lock: CommitLock) -> Callable[[], Marks]:
    """The mark as it was: everything, the archive's summaries included, under the lock."""

    def read() -> Marks:
        with lock:
            found = set(rules.digests_in(store.storage.read() or {}))
            hot = store.hot()
            oldest = min((job.started_at for job in hot
                          if not job.terminal and job.started_at is not None), default=None)
            for summary in store.job_summaries([]):
                found.update(tree for _, tree in summary.trees())
        return found, oldest

    return read


def measure(read: Callable[[], Marks], lock: TimedLock) -> tuple[float, float, Marks]:
    """(seconds under the lock, seconds in all, the marks) of one mark."""
    lock.held = 0.0
    start = time.perf_counter()
    marks = read()
    return lock.held, time.perf_counter() - start, marks


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--archived", type=int, default=100_000)
    parser.add_argument("--hot", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        lock = TimedLock()
        store = TinyDbStore(Path(tmp), lock)
        with lock:
            seed_archive(store, args.archived, hot=args.hot)
        ways = {"before": marks_before(store, lock), "after": marks_in(store, lock)}
        held: dict[str, list[float]] = {k: [] for k in ways}
        wall: dict[str, list[float]] = {k: [] for k in ways}
        named: dict[str, Marks] = {}
        for _ in range(args.rounds):  # alternated, so that noise hits both alike
            for way, read in ways.items():
                h, w, named[way] = measure(read, lock)
                held[way].append(h)
                wall[way].append(w)
        store.close()
    assert named["before"] == named["after"], "the two marks name different trees"
    trees = len(named["after"][0])
    print(f"{args.archived:,} archived jobs, {args.hot} hot, {trees:,} trees named; "
          f"median of {args.rounds}")
    for way in ways:
        print(f"{way:>6}: under the lock {statistics.median(held[way]) * 1e3:8.2f} ms, "
              f"in all {statistics.median(wall[way]) * 1e3:8.2f} ms")
    ratio = statistics.median(held["before"]) / statistics.median(held["after"])
    print(f"time under the lock, before/after: {ratio:,.0f}x shorter")
    total = statistics.median(wall["before"]) / statistics.median(wall["after"])
    print(f"whole mark, before/after: {total:,.1f}x faster")


if __name__ == "__main__":
    main()

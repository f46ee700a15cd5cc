"""The job history in a TinyDbStore: finished jobs moved into one archive file per month
(`archive/jobs-YYYY-MM.json`, by end time), and what the store answers from them.

A write to TinyDB costs in proportion to the file it rewrites: moving finished jobs
out of the hot database keeps that cost from growing with history. Listings read the
archives through `history.ArchiveIndex` (no lock); questions over every job
(`job_summaries`, `archived_using`) and listing totals (`archived_count`) are answered
from what is kept in memory of each archived job, so no archive is read for them.
"""

from __future__ import annotations

import contextlib
import gc
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from tinydb import TinyDB
from tinydb.table import Document, Table

from nai_server.core.job import Job, JobSummary
from nai_server.store import archive_summary
from nai_server.store.atomic import AtomicJSONStorage, read_json_file
from nai_server.store.history import (
    ArchiveIndex,
    JobFacts,
    JobFilter,
    doc_of,
    summary_of,
    tally,
)
from nai_server.store.job_records import JobRecords

Doc = dict[str, Any]

# Archived jobs from which the loaded history is left out of garbage collections.
FREEZE_AFTER = 10_000


class ArchivedJobs(JobRecords):
    """The archive half of `TinyDbStore`'s job table (the hot half is in `db`)."""

    # Set by TinyDbStore: where the archives are, and its hot database's tables.
    archive_dir: Path
    meta: Table
    jobs: Table
    _next_id: int

    def get_setting(self, key: str, default: Any = None) -> Any:
        raise NotImplementedError

    def _open_archives(self) -> list[int]:
        """Load what is kept in memory of every archive; the highest id of each.
        Raises StateUnreadable naming a damaged archive."""
        self.history = ArchiveIndex(self.archive_dir)
        # Per month, how many archived jobs each (user, state) has: a listing's total
        # without reading the archives. Changed only under the service's lock.
        self._tallies: dict[str, dict[tuple[str, str], int]] = {}
        # What questions over every job need of each archived one, in memory.
        self.facts = JobFacts()
        with _gc_paused(freeze=lambda: len(self.facts) >= FREEZE_AFTER):
            return [self._scan_archive(p) for p in sorted(self.archive_dir.glob("jobs-*.json"))]

    def _scan_archive(self, path: Path) -> int:
        """The highest id in an archive file; counts its jobs for `archived_count`. From
        its summary when that was made of the file as it is; else parsed (a
        damaged file raises StateUnreadable naming it) and summarised anew."""
        month = path.name[len("jobs-"):-len(".json")]
        known = archive_summary.load(path)
        if known is not None:
            high, self._tallies[month], facts = known
            self.facts.add_facts(facts)
            return high
        data = read_json_file(path)  # raises StateUnreadable naming the file
        jobs = data.get("jobs") if isinstance(data, dict) else None
        if not isinstance(jobs, dict):
            return 0
        ids = [int(k) for k in jobs if k.isdigit()]
        self._tallies[month] = tally(d for d in jobs.values() if isinstance(d, dict))
        self.facts.add((int(k), d) for k, d in jobs.items() if k.isdigit() and isinstance(d, dict))
        high = max(ids, default=0)
        archive_summary.save(path, high, self._tallies[month], self.facts.of(ids))
        return high

    def archived_months_of(self, job_id: int) -> list[str]:
        """The archive months whose id range holds `job_id`, newest first."""
        ranges: dict[str, list[int]] = self.get_setting("archive_ranges", {})
        return sorted((m for m, (low, high) in ranges.items() if low <= job_id <= high),
                      reverse=True)

    def archived_months(self, below: int | None = None) -> list[str]:
        """The archive months that may hold an id below `below`, newest first."""
        ranges: dict[str, list[int]] = self.get_setting("archive_ranges", {})
        return sorted((m for m, (low, _) in ranges.items() if below is None or low < below),
                      reverse=True)

    def archived_top(self, below: int | None = None) -> int:
        """The highest archived id below `below` could be (0: none)."""
        ranges: dict[str, list[int]] = self.get_setting("archive_ranges", {})
        return max((high if below is None else min(high, below - 1)
                    for low, high in ranges.values() if below is None or low < below),
                   default=0)

    def archived_count(self, user: str | None = None, state: str | None = None) -> int:
        """How many archived jobs have this user and state (None: any), from the
        per-month tallies: no archive is read."""
        return sum(n for counts in self._tallies.values() for (u, s), n in counts.items()
                   if (user is None or u == user) and (state is None or s == state))

    def iter_jobs(self, pred: Callable[[Doc], bool] | None = None) -> Iterator[Doc]:
        """Every job whole, newest id first: the hot table, then the archives (through
        the history cache, parsed as needed). For tools and tests: the daemon asks its
        questions over every job through `job_summaries`, which reads no archive."""
        hot = sorted(self.hot_jobs(), key=lambda d: -d["id"])
        seen = {d["id"] for d in hot}
        yield from (d for d in hot if pred is None or pred(d))
        for row in self.history.rows_matching(JobFilter(), self.archived_months()):
            if row[0] not in seen:
                doc = doc_of(row)
                if pred is None or pred(doc):
                    yield doc

    def job_summaries(self, hot: list[Job] | None = None, *,
                      ended_after: float | None = None) -> Iterator[JobSummary]:
        """Every job for a question over all of them (fair-share usage, who may read a
        tree, what a damaged tree breaks), newest archived id first after the hot ones:
        the hot jobs, then each archived job as `history.summary_of` keeps it, from
        memory. No archive is read, so a caller holding the service's lock
        holds it briefly, and one that passes `hot` (read under the lock just before)
        needs no lock for the rest. A job both hot and archived (a crash) comes once,
        hot. `ended_after`: archived jobs that ended before then are left out."""
        hot = sorted(self.hot() if hot is None else hot, key=lambda j: -j.id)
        seen = {j.id for j in hot}
        yield from (j.summary() for j in hot)
        low = float("-inf") if ended_after is None else ended_after
        yield from (summary_of(f) for f in self.facts.all()
                    if f[0] not in seen and (f[6] is None or f[6] >= low))

    def archived_using(self, tree_id: str) -> list[JobSummary]:
        """The archived jobs that use `tree_id` (code, outputs, dataset or model), as
        summaries (see `job_summaries`), from memory; no lock needed."""
        return [summary_of(f) for f in self.facts.using(tree_id)]

    def archived_trees(self) -> set[str]:
        """Every tree an archived job uses (code, outputs, dataset, model), from memory:
        no archive is read and no lock is needed. A job's trees are here from before it
        leaves the hot table (`archive_jobs`) and stay while its archived copy names
        them: they go only when the job is archived again (after a crash left it in
        both places) with a hot copy that no longer names them."""
        return self.facts.trees()

    def archive_jobs(self, job_ids: list[int], now: float | None = None) -> int:
        """Move finished jobs to their month's archive file (by end time).

        Order matters for crash safety: archive first, then the id high-water mark,
        then the removal from the hot table. A crash between leaves a job in both
        places; the hot copy wins and the next archive pass overwrites the old copy.
        """
        docs = [d for d in (self.jobs.get(doc_id=i) for i in job_ids) if isinstance(d, Document)]
        if not docs:
            return 0
        by_month: dict[str, list[Document]] = {}
        for doc in docs:
            ended = doc.get("ended_at") or doc.get("submitted_at") or now or time.time()
            by_month.setdefault(time.strftime("%Y-%m", time.gmtime(ended)), []).append(doc)
        ranges: dict[str, list[int]] = dict(self.get_setting("archive_ranges", {}))
        for month, month_docs in by_month.items():
            with self._archive(month) as db:
                counts, month_ids = self._bulk_upsert(db.table("jobs", cache_size=0),
                                                      month_docs)
            self._tallies[month] = counts
            self.facts.add((d.doc_id, d) for d in month_docs)
            archive_summary.save(self.archive_dir / f"jobs-{month}.json", max(month_ids),
                                 counts, self.facts.of(month_ids))
            ids = [d.doc_id for d in month_docs]
            low, high = ranges.get(month, [min(ids), max(ids)])
            ranges[month] = [min(low, *ids), max(high, *ids)]
        archived_max = max(int(self.get_setting("archived_max_id", 0)), *(d.doc_id for d in docs))
        self.meta.upsert(
            Document({"archive_ranges": ranges, "archived_max_id": archived_max}, doc_id=1)
        )
        self.jobs.remove(doc_ids=[d.doc_id for d in docs])
        self._next_id = max(self._next_id, archived_max + 1)
        return len(docs)

    @staticmethod
    def _bulk_upsert(table: Any, docs: list[Document]
                     ) -> tuple[dict[tuple[str, str], int], list[int]]:
        """One rewrite of the archive file for the whole batch; the month's tally and
        the ids it holds."""
        counts: dict[tuple[str, str], int] = {}
        ids: list[int] = []

        def update(raw: dict[int, Any]) -> None:
            for doc in docs:
                raw[doc.doc_id] = dict(doc)
            counts.update(tally(raw.values()))
            ids.extend(int(k) for k in raw)

        table._update_table(update)
        return counts, ids

    def _archive(self, month: str) -> TinyDB:
        # Opened per use, not cached, to write a batch into: reads go through `history`.
        return TinyDB(self.archive_dir / f"jobs-{month}.json", storage=AtomicJSONStorage)


@contextlib.contextmanager
def _gc_paused(freeze: Callable[[], bool]) -> Iterator[None]:
    """No garbage collection while a long history is loaded: every collection it set
    off scanned all the daemon's objects again, which doubled the store's open. A long
    history (long-lived, without cycles) is then left out of later collections, whose
    pauses would otherwise grow with it."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if freeze():
            gc.freeze()
        if was:
            gc.enable()

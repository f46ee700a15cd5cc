"""Reading the job history (the monthly archive files) without the service's lock.

An archive file is only ever replaced whole (temp file, rename: see `atomic`), under
the service's lock, when finished jobs move into it. So a reader needs no lock: it
opens the file, and what it reads through that descriptor is one complete version.
Each file's jobs are cached, keyed by the file's inode, mtime and size, as rows
sorted newest id first; only the month that jobs are being archived into is ever
parsed again.

A row keeps the job as its JSON text, not as a dict: a long history held as
dicts would make every garbage collection of the daemon slower; tuples of strings
and numbers are left alone by the collector.
"""

from __future__ import annotations

import bisect
import heapq
import json
import os
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nai_server.core.job import Job, JobSummary, Run
from nai_server.core.states import JobState
from nai_server.core.store_check import PINNED_ROLES, job_trees
from nai_server.store.atomic import StateUnreadable

Doc = dict[str, Any]
# (id, user, state, submitted_at, the job as JSON)
Row = tuple[int, str, str, float, str]


@dataclass(frozen=True)
class JobFilter:
    """Which jobs a history query wants; None matches anything."""

    user: str | None = None
    state: str | None = None
    since: float | None = None  # submitted at or after
    before: int | None = None  # ids below this (the paging cursor)

    def row(self, row: Row) -> bool:
        return ((self.user is None or row[1] == self.user)
                and (self.state is None or row[2] == self.state)
                and (self.since is None or row[3] >= self.since)
                and (self.before is None or row[0] < self.before))

    def job(self, job: Job) -> bool:
        return ((self.user is None or job.user == self.user)
                and (self.state is None or job.state == self.state)
                and (self.since is None or job.submitted_at >= self.since)
                and (self.before is None or job.id < self.before))


def row_of(job_id: int, job: Doc, text: str) -> Row:
    return (job_id, str(job.get("user", "")), str(job.get("state", "")),
            float(job.get("submitted_at") or 0.0), text)


def doc_of(row: Row) -> Doc:
    doc: Doc = json.loads(row[4])
    doc.setdefault("id", row[0])
    return doc


def job_of(row: Row) -> Job:
    """The archived job of a row, as a record."""
    return Job.from_doc(doc_of(row))


class ArchiveIndex:
    """The archived jobs of a state dir, cached per archive file."""

    def __init__(self, archive_dir: Path) -> None:
        self.dir = archive_dir
        self._cache: dict[str, tuple[tuple[int, int, int], list[Row]]] = {}
        self._lock = threading.Lock()  # one parse per file at a time; not the service's

    def months(self) -> list[str]:
        """The archive files now on disk, newest month first."""
        names = (p.name for p in self.dir.glob("jobs-*.json"))
        return sorted((n[len("jobs-"):-len(".json")] for n in names), reverse=True)

    def rows(self, month: str) -> list[Row]:
        """The month's jobs, newest id first ([] if the file is gone)."""
        path = self.dir / f"jobs-{month}.json"
        with self._lock:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                self._cache.pop(month, None)
                return []
            except OSError as exc:
                raise StateUnreadable(path, exc.strerror or str(exc)) from exc
            with os.fdopen(fd, "rb") as f:
                st = os.fstat(f.fileno())
                key = (st.st_ino, st.st_mtime_ns, st.st_size)
                cached = self._cache.get(month)
                if cached is not None and cached[0] == key:
                    return cached[1]
                raw = f.read()
            rows = _parse(path, raw)
            self._cache[month] = (key, rows)
            return rows

    def rows_matching(self, want: JobFilter, months: Iterable[str]) -> Iterator[Row]:
        """Archived rows matching `want`, newest id first, each id once."""
        streams = []
        for month in months:
            rows = self.rows(month)
            start = 0 if want.before is None else bisect.bisect_right(
                rows, -want.before, key=lambda r: -r[0])
            streams.append(r for r in _from(rows, start) if want.row(r))
        last = None
        for row in heapq.merge(*streams, key=lambda r: -r[0]):
            if row[0] != last:
                last = row[0]
                yield row

    def get(self, job_id: int, months: Iterable[str]) -> Doc | None:
        """The archived job's document (see `job` for its record)."""
        for month in months:
            rows = self.rows(month)
            at = bisect.bisect_left(rows, -job_id, key=lambda r: -r[0])
            if at < len(rows) and rows[at][0] == job_id:
                return doc_of(rows[at])
        return None

    def job(self, job_id: int, months: Iterable[str]) -> Job | None:
        """The archived job with this id, searched in `months` (newest first)."""
        doc = self.get(job_id, months)
        return None if doc is None else Job.from_doc(doc)


def _from(rows: list[Row], start: int) -> Iterator[Row]:
    for i in range(start, len(rows)):
        yield rows[i]


def _parse(path: Path, raw: bytes) -> list[Row]:
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise StateUnreadable(path, f"not JSON ({exc})") from exc
    jobs = data.get("jobs") if isinstance(data, dict) else None
    if not isinstance(jobs, dict):
        return []
    rows = [row_of(int(k), doc, json.dumps(doc, separators=(",", ":")))
            for k, doc in jobs.items() if k.isdigit() and isinstance(doc, dict)]
    rows.sort(key=lambda r: -r[0])
    return rows


def tally(jobs: Iterable[Doc]) -> dict[tuple[str, str], int]:
    """How many jobs per (user, state): what a listing's `total` adds up."""
    counts: dict[tuple[str, str], int] = {}
    for job in jobs:
        key = (str(job.get("user", "")), str(job.get("state", "")))
        counts[key] = counts.get(key, 0) + 1
    return counts


# An archived job as the questions over every job see it: (id, user, group, state,
# (role, tree id, role, tree id...), started_at, ended_at, (gpu, ...), ((start, end,
# gpus), ...), GPUs held elsewhere (Slurm)). Plain tuples of strings and numbers, which
# the garbage collector leaves alone; names, GPU lists and code trees shared between
# jobs are kept once.
Fact = tuple[Any, ...]
_TREE_FIELDS = {"code": "code_tree", "outputs": "output_tree", "dataset": "dataset_tree",
                "model": "model_tree"}


def summary_of(fact: Fact) -> JobSummary:
    """A fact as the summary record of its job."""
    job_id, user, group, state, trees, started, ended, gpus, runs, elsewhere = fact
    roles = {_TREE_FIELDS[trees[i]]: trees[i + 1] for i in range(0, len(trees), 2)}
    return JobSummary(
        id=job_id, user=user, group=group,
        state=JobState(state) if state else JobState.QUEUED, started_at=started,
        ended_at=ended, gpus=gpus, gpus_elsewhere=elsewhere,
        runs=tuple(Run(float(s), float(e), int(g)) for s, e, g in runs) if runs else (),
        **roles)


class JobFacts:
    """What every archived job adds to answers about all jobs (fair-share usage, who may
    read a tree through a job, what a damaged tree breaks), kept in memory so that
    those answers read no archive: filled from the archives when the store opens and
    from each batch as it is archived. A job that uses no tree and never held a GPU
    adds nothing and is not kept. Readers need not hold the service's lock."""

    def __init__(self) -> None:
        self._facts: dict[int, Fact] = {}
        # tree id → the id of the one job using it, or a tuple of them
        self._by_tree: dict[str, int | tuple[int, ...]] = {}
        self._shared: dict[Any, Any] = {}  # one copy of each name and GPU list
        self._lock = threading.Lock()

    def add(self, jobs: Iterable[tuple[int, Doc]]) -> None:
        """Record (or replace: a job archived again after a crash) archived jobs."""
        fact_of, found, without = self._fact, [], []
        for job_id, job in jobs:
            fact = fact_of(job_id, job)
            if fact is None:
                without.append(job_id)  # nothing to keep (its old fact, if any, goes)
            else:
                found.append(fact)
        if without:
            with self._lock:
                for job_id in without:
                    if job_id in self._facts:
                        self._drop(job_id)
        self.add_facts(found)

    def add_facts(self, found: Iterable[Fact]) -> None:
        """Record facts made before (kept per archive: see `archive_summary`).
        Called with every archived job as the store opens: kept lean."""
        by_tree, facts = self._by_tree, self._facts
        with self._lock:
            for fact in found:
                job_id = fact[0]
                if job_id in facts:
                    self._drop(job_id)
                facts[job_id] = fact
                trees = fact[4]
                for i in range(1, len(trees), 2):
                    users = by_tree.get(trees[i])
                    if users is None:
                        by_tree[trees[i]] = job_id
                    elif isinstance(users, int):
                        if users != job_id:
                            by_tree[trees[i]] = (users, job_id)
                    elif job_id not in users:
                        by_tree[trees[i]] = (*users, job_id)

    def _fact(self, job_id: int, job: Doc) -> Fact | None:
        get, one = job.get, self._one
        gpus, runs, started = get("gpus"), get("runs"), get("started_at")
        elsewhere = int(get("gpus_elsewhere") or 0)
        code, out, dataset, model = (get("code_tree"), get("output_tree"), get("dataset"),
                                     get("model"))
        if not (code or out or dataset or model or runs or ((gpus or elsewhere) and started)):
            return None
        trees: tuple[Any, ...] = ()
        if code:
            trees = ("code", one(code))  # shared by many jobs: kept once
        if out:
            trees = (*trees, "outputs", out)  # each job's own
        if dataset or model:
            trees = (*trees, *(v for role, tree in job_trees(job) if role in PINNED_ROLES
                               for v in (role, one(tree))))
        return (job_id, one(get("user", "")), one(get("group")), one(get("state", "")),
                trees, started, get("ended_at"), one(tuple(gpus or ())),
                tuple(tuple(run) for run in runs) if runs else (), elsewhere)

    def _one(self, value: Any) -> Any:
        """The copy of `value` already kept, if any (names, GPU lists, code trees)."""
        try:
            return self._shared.setdefault(value, value)
        except TypeError:  # not hashable: kept as it is
            return value

    def _drop(self, job_id: int) -> None:
        old = self._facts.pop(job_id, None)
        trees = old[4] if old else ()
        for i in range(1, len(trees), 2):
            users = self._by_tree.get(trees[i], ())
            rest = tuple(u for u in ((users,) if isinstance(users, int) else users)
                         if u != job_id)
            if not rest:
                self._by_tree.pop(trees[i], None)
            else:
                self._by_tree[trees[i]] = rest[0] if len(rest) == 1 else rest

    def of(self, ids: Iterable[int]) -> list[Fact]:
        """The facts of these jobs (those that have one)."""
        with self._lock:
            return [f for f in (self._facts.get(i) for i in ids) if f is not None]

    def using(self, tree_id: str) -> list[Fact]:
        """The archived jobs whose code, outputs, dataset or model is `tree_id`."""
        with self._lock:
            users = self._by_tree.get(tree_id, ())
            return [self._facts[i] for i in ((users,) if isinstance(users, int) else users)]

    def trees(self) -> set[str]:
        """Every tree an archived job uses (code, outputs, dataset, model): the keys
        of the index `using` reads, copied under this object's own lock."""
        with self._lock:
            return set(self._by_tree)

    def all(self) -> list[Fact]:
        """Every archived job's fact, newest id first."""
        with self._lock:
            facts = list(self._facts.values())
        facts.sort(key=lambda f: -f[0])
        return facts

    def __len__(self) -> int:
        return len(self._facts)

"""The ports the use cases and the run loop depend on, as `typing.Protocol`s: what
they need of a store, not which store it is (the TinyDB one in the daemon, the
in-memory one in tests of the run loop)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from nai_server.core.job import Job


@runtime_checkable
class JobStore(Protocol):
    """Where job records live. Ids are handed out by the store and never repeat; a
    job is hot (updatable) until it is archived, and found by `get` either way.

    Implemented by `store.db.TinyDbStore` and `store.memory.MemoryJobStore`; both are
    checked against one contract (tests/store/test_job_store_contract.py)."""

    def next_job_id(self) -> int:
        """The id the next inserted job will get."""
        ...

    def insert(self, job: Job) -> Job:
        """Store a new job (its `id` is ignored) under the next id; the stored record."""
        ...

    def update(self, job_id: int, **changes: Any) -> Job:
        """Set fields of a hot job (named as in `Job`); the record after. KeyError if
        no hot job has this id."""
        ...

    def get(self, job_id: int) -> Job | None:
        """A job, hot or archived; None if there is none."""
        ...

    def get_hot(self, job_id: int) -> Job | None:
        """A job of the hot table; None if it is archived or unknown."""
        ...

    def hot(self) -> list[Job]:
        """Every hot job."""
        ...

    def archive_jobs(self, job_ids: list[int], now: float | None = None) -> int:
        """Move finished hot jobs out of the hot table; how many moved."""
        ...

    def watch_states(self, watcher: Callable[[str | None, dict[str, Any]], None]) -> None:
        """Call `watcher(state before, job document after)` on each change of a job's
        state, as it is made (before it is committed)."""
        ...

    def commit(self) -> None:
        """Make every change so far durable now, before an action the store cannot take
        back (a job's process is started only once its start is on disk)."""
        ...

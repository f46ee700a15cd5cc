"""The per-user cap on active jobs (`jobs.max_active_per_user`): how many jobs each
user has queued or running, and the refusal of a submit beyond the cap.

Counting a user's jobs by scanning the hot table on every submit costs O(queue) per
submit; with 10,000 jobs queued that is most of a submit's time. So the counts are
kept per user and recounted from the store only when its `generation` moved for some
other reason than this counter's own inserts (a tick's start or end of a job, a cancel,
another write). Nothing is persisted: after a restart, the first submit counts afresh.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from nai_server.core.job import Job
from nai_server.protocol import Forbidden
from nai_server.store.db import TinyDbStore


def active_per_user(jobs: Iterable[Job]) -> Counter[str]:
    """How many jobs each user has that have not ended (queued, starting, running or
    preempted and about to be requeued)."""
    return Counter(j.user for j in jobs if not j.terminal)


def refusal(user: str, active: int, cap: int | None) -> Forbidden | None:
    """The refusal of one more job for a user with `active` jobs, or None if it fits."""
    if cap is None or active < cap:
        return None
    return Forbidden(
        f"you have {active:,} jobs queued or running, the most this server allows one "
        f"user (jobs.max_active_per_user: {cap:,}); wait for some to end or cancel some "
        f"(`nai jobs --mine`, `nai cancel ID...`)",
        details={"limit": "jobs.max_active_per_user", "max": cap, "active": active,
                 "user": user})


class ActiveCounts:
    """Active jobs per user, derived from the store. Call `check` and `added` under
    the service's lock (every write to jobs holds it), so that nothing writes a job
    between the count and the insert it admits."""

    def __init__(self, store: TinyDbStore) -> None:
        self.store = store
        self._token: object | None = None  # the store's generation the counts are of
        self._rollbacks = -1  # the store's rollbacks when they were counted
        self._counts: Counter[str] = Counter()
        self._checked: str | None = None  # whom the last `check` admitted

    def of(self, user: str) -> int:
        """How many jobs `user` has queued or running now."""
        token = self.store.generation()
        if token != self._token:
            self._rollbacks = self.store.rollbacks
            self._counts = active_per_user(self.store.hot())
            self._token = token
        return self._counts[user]

    def check(self, user: str, cap: int | None) -> None:
        """Refuse (403) one more job for `user` if they are at the cap."""
        if cap is None:
            return
        refused = refusal(user, self.of(user), cap)
        if refused is not None:
            raise refused
        self._checked = user

    def added(self, user: str) -> None:
        """`user`'s new job was inserted since `check` (and no job changed otherwise:
        the lock is held throughout): count it, and take the store's generation now as
        the one counted, so the next submit need not recount. A failed commit rolled
        back meanwhile voids the counts: the next `of` counts afresh."""
        token = self.store.generation()  # before the rollbacks: one after it shows in it
        checked, self._checked = self._checked, None
        if checked != user or self.store.rollbacks != self._rollbacks:
            self._token = None
            return
        self._counts[user] += 1
        self._token = token

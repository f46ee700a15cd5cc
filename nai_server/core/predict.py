"""Run-time predictions learned from each user's finished jobs, instead of their limits.

Users' time limits are poor estimates: most jobs end well before them, and a backfill
that trusts them keeps GPUs for jobs that have long finished and sees every job as
longer than it is. As in Tsafrir, Etsion and Feitelson ("Backfilling using
system-generated predictions rather than user runtime estimates", IEEE TPDS 2007), the
system predicts from the user's last finished jobs, and the limit stays the hard kill.

A limit still tells one job of a user from another (a one-hour limit and a week's are
different jobs), so a job with a limit is predicted as its limit times the mean share of
their limits that the user's last ``KEEP_RATIOS`` jobs used; a job without one as the
mean run time of the user's last ``KEEP`` jobs (Tsafrir's rule); one whose user has no
history as its limit. Per job name too, where the caller knows names (most specific
first). A running job that outlives its prediction is expected to run twice as long
again, and so on, up to its limit.

Everything is a pure function of finished jobs: the daemon rebuilds the state from its
job history at start (``learn`` over the finished jobs in end order) and feeds it each
job that ends (``learn`` with one more); ``Accounting.runtimes`` carries ``runtimes``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

KEEP = 2  # run times kept per key: Tsafrir et al. found the last two predict best
KEEP_RATIOS = 5  # shares of the limit kept per key: one odd job moves the mean less
RATIO = "ratio:"  # key prefix of the shares of the limit


@dataclass(frozen=True)
class Finished:
    """A finished job, as the predictor sees it."""

    user: str
    seconds: float  # how long it ran, all runs of a preempted job together
    time_limit: int | None = None
    name: str | None = None


History = Mapping[str, tuple[float, ...]]
"""The last run times per key (and shares of the limit per ``ratio:`` key), oldest first."""


def keys(user: str, name: str | None = None) -> tuple[str, ...]:
    """The keys a job of this user (and name) predicts from, most specific first."""
    own = f"user:{user}"
    return (own,) if name is None else (f"{own}/{name}", own)


def learn(history: History, finished: Iterable[Finished]) -> dict[str, tuple[float, ...]]:
    """``history`` after these jobs ended (in this order)."""
    state = dict(history)
    for job in finished:
        seconds = max(0.0, job.seconds)
        for key in keys(job.user, job.name):
            state[key] = (*state.get(key, ())[1 - KEEP :], seconds)
            if job.time_limit:
                share = min(1.0, seconds / job.time_limit)
                state[RATIO + key] = (*state.get(RATIO + key, ())[1 - KEEP_RATIOS :], share)
    return state


def runtimes(history: History) -> dict[str, float]:
    """The mean of what each key keeps: a run time, or (``ratio:`` keys) a share."""
    return {key: sum(kept) / len(kept) for key, kept in history.items() if kept}


def estimate(
    predicted: Mapping[str, float], user: str, time_limit: int | None, name: str | None = None
) -> float | None:
    """A job's predicted run time, never more than its time limit; its limit when nothing
    is known of its user (None: no limit and nothing known)."""
    for key in keys(user, name):
        if time_limit is not None:
            share = predicted.get(RATIO + key)
            if share is not None:
                return time_limit * share
        else:
            found = predicted.get(key)
            if found is not None:
                return found
    return None if time_limit is None else float(time_limit)


def expected_end(
    started_at: float, predicted: float | None, time_limit: int | None, now: float
) -> float:
    """When a running job is expected to end: at its prediction, or, once it has outlived
    that, after twice as long again (and so on), never past its time limit (inf when it
    has neither)."""
    limit = float("inf") if time_limit is None else started_at + time_limit
    if predicted is None:
        return max(now, limit)
    length = max(predicted, 1.0)
    while started_at + length <= now and started_at + length < limit:
        length *= 2
    return max(now, min(limit, started_at + length))

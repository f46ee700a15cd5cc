"""argparse types for the job ids a command takes: dependencies (`--after 12,13`) and
the jobs to cancel (`12`, `12-20`). Each refuses a value in words, before anything is
sent to a server."""

from __future__ import annotations

import argparse


def dependency_ids(text: str) -> list[int]:
    """An argparse type: `--after` / `--after-ok`'s job ids, comma-separated (`12,13`)."""
    ids = []
    for part in text.split(","):
        if not part.strip().isdigit() or int(part) < 1:
            raise argparse.ArgumentTypeError(
                f"{text!r}: give job ids, comma-separated, e.g. 12 or 12,13")
        ids.append(int(part))
    return ids


MAX_CANCEL_RANGE = 10_000  # ids one `A-B` may name: a typo (1-100000) is not a purge


def job_ids(text: str) -> list[int]:
    """An argparse type: a job id (`12`) or an inclusive range of them (`12-20`)."""
    first, dash, last = text.partition("-")
    try:
        low = int(first)
        high = int(last) if dash else low
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"job ids are numbers or ranges such as 12-20, got {text!r}") from None
    if low < 1:
        raise argparse.ArgumentTypeError(f"job ids start at 1, got {text!r}")
    if high < low:
        raise argparse.ArgumentTypeError(
            f"{text!r}: a range goes from the lower id to the higher, e.g. {high}-{low}")
    if high - low + 1 > MAX_CANCEL_RANGE:
        raise argparse.ArgumentTypeError(
            f"{text!r} names {high - low + 1:,} jobs; a range names at most "
            f"{MAX_CANCEL_RANGE:,}: give several smaller ranges")
    return list(range(low, high + 1))

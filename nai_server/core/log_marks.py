"""Which parts of a job's log came from its stderr: the places its tagger recorded
(`host.stderr_tagger`), made fit to answer with. Pure functions.

The records are written by the job's owner, so nothing in them is trusted: a place
that is empty or backwards is skipped, places are cut to the range asked for, sorted
and merged, and an answer holds a bounded number of them.
"""

from __future__ import annotations

from collections.abc import Iterable

Span = tuple[int, int]  # [start, end) byte offsets of the log


def clip_spans(records: Iterable[Span], lo: int, hi: int,
               limit: int) -> tuple[list[Span], int | None]:
    """The stderr spans within [lo, hi), sorted and merged, at most `limit` of them;
    and, when there were more, the offset where the first left out begins (an answer
    stops there: what follows is asked for next). None when none was left out."""
    inside = sorted((max(start, lo), min(end, hi)) for start, end in records
                    if start < end and start < hi and end > lo)
    merged: list[list[int]] = []
    for start, end in inside:
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    if len(merged) > limit:
        return [(s, e) for s, e in merged[:limit]], merged[limit][0]
    return [(s, e) for s, e in merged], None


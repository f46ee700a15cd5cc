"""A job's metrics summed up for the model version its outputs become: the best and the
last value of each metric, with the direction that makes a value "best".

Rows are those of the job's metrics.jsonl (`{"step", "time", name: value...}`); only
finite numbers count (booleans and strings are not metrics). The direction of a metric
is given by the caller or guessed from its name: lower is better for losses, errors and
perplexities, higher for everything else (accuracy, F1, BLEU, reward...).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from nai_server.core.bounds import MAX_JSON_INT, has_surrogate, shown

Direction = Literal["min", "max"]
DIRECTIONS = ("min", "max")
# Lower is better for a metric whose name holds one of these (case-insensitive).
LOWER_IS_BETTER = ("loss", "error", "perplexity", "ppl", "mse", "mae")
NOT_METRICS = frozenset({"step", "time", "epoch"})
MAX_METRICS = 100  # names kept; a file with more is summed up for the first ones only
MAX_NAME = 100  # longer names are not metrics anyone reads (and metadata stays small)


def guess_direction(name: str) -> Direction:
    """`min` for names that read as a loss or an error, `max` otherwise."""
    lowered = name.lower()
    return "min" if any(word in lowered for word in LOWER_IS_BETTER) else "max"


def direction_of(name: str, given: Mapping[str, str] | None = None) -> Direction:
    wanted = (given or {}).get(name)
    return "min" if wanted == "min" else "max" if wanted == "max" else guess_direction(name)


@dataclass
class _Track:
    direction: Direction
    best: float
    best_step: int | None
    last: float
    last_step: int | None
    count: int = 1


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer past 1.8e308: a job's file may hold one
        return None
    return number if math.isfinite(number) else None


def _step(row: Mapping[str, Any]) -> int | None:
    """The row's step, if one the metadata can keep (an integer within MAX_JSON_INT)."""
    step = row.get("step")
    if isinstance(step, bool) or not isinstance(step, int) or abs(step) > MAX_JSON_INT:
        return None
    return step


class Summary:
    """Fed rows in file order; `result()` gives, per metric, best/last with their steps,
    how many values were seen and the direction used."""

    def __init__(self, directions: Mapping[str, str] | None = None) -> None:
        self.directions = dict(directions or {})
        self.tracks: dict[str, _Track] = {}
        self.rows = 0

    def feed(self, row: Mapping[str, Any]) -> None:
        self.rows += 1
        step = _step(row)
        for name, value in row.items():
            if not isinstance(name, str) or name in NOT_METRICS or len(name) > MAX_NAME:
                continue
            number = _number(value)
            if number is None:
                continue
            track = self.tracks.get(name)
            if track is None:
                if len(self.tracks) >= MAX_METRICS or has_surrogate(name):
                    continue  # (a name the state file cannot store)
                self.tracks[name] = _Track(direction_of(name, self.directions), number, step,
                                           number, step)
                continue
            track.count += 1
            track.last, track.last_step = number, step
            better = number < track.best if track.direction == "min" else number > track.best
            if better:
                track.best, track.best_step = number, step

    def feed_all(self, rows: Iterable[Mapping[str, Any]]) -> Summary:
        for row in rows:
            self.feed(row)
        return self

    def result(self) -> dict[str, dict[str, Any]]:
        return {name: {"best": t.best, "best_step": t.best_step, "last": t.last,
                       "last_step": t.last_step, "count": t.count, "direction": t.direction}
                for name, t in sorted(self.tracks.items())}


def check_metric_choice(metric: str | None, direction: str | None) -> dict[str, str]:
    """The directions a caller gives (`--metric NAME --min`) as a mapping; a direction
    without a metric means nothing, and is refused with the fix."""
    if direction is not None and direction not in DIRECTIONS:
        raise ValueError(f"direction must be 'min' or 'max', not {direction!r}")
    if metric is None:
        if direction is not None:
            raise ValueError("a direction (--min/--max) needs the metric it is for "
                             "(--metric NAME)")
        return {}
    return {metric: direction or guess_direction(metric)}


def parse_metric_choice(value: object) -> dict[str, Any]:
    """The spec's `register_metric`: `val_ppl`, or `{name: val_ppl, direction: min}`
    (direction min or max; guessed from the name when not given)."""
    if isinstance(value, str):
        value = {"name": value}
    if (not isinstance(value, Mapping) or set(value) - {"name", "direction"}
            or not isinstance(value.get("name"), str)
            or not 0 < len(value["name"]) <= MAX_NAME
            or value.get("direction") not in (None, *DIRECTIONS)):
        raise ValueError(f"must be a metric's name, or {{name: NAME, direction: min|max}}, "
                         f"e.g. {{name: val_loss, direction: min}}, got {shown(value)}")
    return {"name": value["name"], "direction": value.get("direction")}


def headline(summary: Mapping[str, Mapping[str, Any]], metric: str | None) -> dict[str, Any] | None:
    """The chosen metric's entry (named `metric`), for listings; None when the job never
    reported it."""
    if metric is None or metric not in summary:
        return None
    return {"name": metric, **summary[metric]}

"""How `nai metrics` shows a job's metrics: a table (time since the job started, or
ISO 8601 with --iso, never a raw float), CSV, JSON, the last points or a summary
(min, max and last of each metric). Pure: rows in, text out."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from nai_server.protocol import format_elapsed

Row = dict[str, Any]
AXES = ("step", "time")  # first columns; the rest are metrics in the order first seen


def columns(rows: Sequence[Row]) -> list[str]:
    keys: dict[str, None] = {}
    for row in rows:
        keys.update(dict.fromkeys(row))
    return [k for k in AXES if k in keys] + [k for k in keys if k not in AXES]


def iso(at: Any) -> str:
    """A time as ISO 8601 in UTC ("2026-12-06T23:10:14Z"); what it is if not a time."""
    if isinstance(at, (int, float)) and not isinstance(at, bool) and math.isfinite(at) \
            and 0 <= at < 1e11:
        return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return "" if at is None else str(at)


def cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else str(value)


def show_time(at: Any, start: float | None, use_iso: bool) -> str:
    if use_iso or start is None or not isinstance(at, (int, float)) or isinstance(at, bool):
        return iso(at)
    return "+" + format_elapsed(max(0.0, at - start))


def table_rows(rows: Sequence[Row], start: float | None,
               use_iso: bool) -> tuple[list[str], list[list[str]]]:
    """Headers and cells of the table; time relative to `start` (the job's start, or
    the first point's time) unless `use_iso`."""
    keys = columns(rows)
    if start is None:
        start = next((r["time"] for r in rows if isinstance(r.get("time"), (int, float))),
                     None)
    cells = [[show_time(r.get(k), start, use_iso) if k == "time" else cell(r.get(k))
              for k in keys] for r in rows]
    return [k.upper() if k in AXES else k for k in keys], cells


def to_csv(rows: Sequence[Row]) -> str:
    """All columns, the time as ISO 8601 (spreadsheets and pandas read it as a date)."""
    keys = columns(rows)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(keys)
    for row in rows:
        writer.writerow([iso(row.get(k)) if k == "time" else
                         "" if row.get(k) is None else row.get(k) for k in keys])
    return out.getvalue()


def summary(rows: Sequence[Row]) -> dict[str, dict[str, Any]]:
    """Per metric: min, max, last (and the step of each), and how many points."""
    found: dict[str, dict[str, Any]] = {}
    for row in rows:
        step = row.get("step")
        for key, value in row.items():
            if key in AXES or isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value):
                continue
            entry = found.setdefault(key, {"min": value, "min_step": step, "max": value,
                                           "max_step": step, "points": 0})
            if value < entry["min"]:
                entry["min"], entry["min_step"] = value, step
            if value > entry["max"]:
                entry["max"], entry["max_step"] = value, step
            entry["last"], entry["last_step"] = value, step
            entry["points"] += 1
    return found


def summary_rows(found: dict[str, dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    def at(value: Any, step: Any) -> str:
        return cell(value) + ("" if step is None else f" (step {step})")

    return (["METRIC", "MIN", "MAX", "LAST", "POINTS"],
            [[name, at(e["min"], e["min_step"]), at(e["max"], e["max_step"]),
              at(e["last"], e["last_step"]), str(e["points"])] for name, e in found.items()])

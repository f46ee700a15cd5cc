"""Printing for the batch CLI: stdout carries data (tables or --json), stderr the rest."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel

STATE_MARK = {"succeeded": "ok", "failed": "FAILED", "cancelled": "cancelled",
              "timed_out": "TIMED OUT", "lost": "LOST"}


def emit_json(data: Any) -> None:
    if isinstance(data, BaseModel):
        data = data.model_dump(mode="json")
    elif isinstance(data, list):
        data = [d.model_dump(mode="json") if isinstance(d, BaseModel) else d for d in data]
    print(json.dumps(data, indent=2))


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    cells = [[str(c) for c in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
              for r in cells]
    return "\n".join(lines)


def duration(seconds: float | None) -> str:
    if seconds is None or seconds < 0:
        return "-"
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    if seconds < 86400:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 86400}d{seconds % 86400 // 3600:02d}h"


def size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def job_runtime(job: Any, now: float | None = None) -> str:
    now = now or time.time()
    if job.started_at is None:
        return f"waiting {duration(now - job.submitted_at)}"
    return duration((job.ended_at or now) - job.started_at)


def job_rows(jobs: Sequence[Any]) -> str:
    rows = []
    for j in jobs:
        state = j.state + (f" ({j.reason})" if j.reason else "")
        rows.append([j.id, j.name, j.user, state, ",".join(map(str, j.gpus)) or
                     (str(j.spec.get("gpus", 1)) + " wanted" if j.state == "queued" else "cpu"),
                     job_runtime(j)])
    return table(rows, ["ID", "NAME", "USER", "STATE", "GPUS", "TIME"])


def err(message: str) -> None:
    print(f"nai: {message}", file=sys.stderr)


def note(message: str) -> None:
    """Diagnostics and progress for people: stderr, so stdout stays data."""
    print(message, file=sys.stderr)

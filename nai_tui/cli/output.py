"""Printing for the batch CLI: stdout carries data (tables or --json), stderr the rest."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel

from nai_server.protocol import format_elapsed, format_size
from nai_tui.cli.contract import KEPT as EXIT_KEPT


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


def job_runtime(job: Any, now: float | None = None) -> str:
    """How long it ran (or has run); for a queued job, when it should start or how long
    it has waited; "-" for one that ended without running (cancelled while queued)."""
    now = now or time.time()
    if job.started_at is None:
        if job.ended_at is not None:
            return "-"
        if job.est_start is not None:
            return starts_in(job.est_start, now)
        return f"waited {format_elapsed(now - job.submitted_at)}"
    return format_elapsed((job.ended_at or now) - job.started_at)


def starts_in(at: float, now: float) -> str:
    """An estimated start in words: "starts in ~5 min", rounded as estimates deserve."""
    left = at - now
    if left < 60:
        return "starts in <1 min"
    if left < 3600:
        return f"starts in ~{round(left / 60)} min"
    if left < 86400:
        return f"starts in ~{left / 3600:.0f} h"
    return f"starts in ~{left / 86400:.0f} d"


def gpus_cell(job: Any) -> str:
    """How many GPUs and, once it has them, which: `2 (gpu 0,1)`; `1` while queued;
    `cpu` for a CPU-only job. A count is never shown as if it were an index."""
    if job.gpus:
        return f"{len(job.gpus)} (gpu {','.join(map(str, job.gpus))})"
    wanted = job.spec.get("gpus", 1)
    return "cpu" if wanted == 0 else str(wanted)


JOB_HEADERS = ["ID", "NAME", "USER", "STATE", "GPUS", "TIME"]


def job_cells(j: Any) -> list[Any]:
    """One job's row of `nai jobs`."""
    state = j.state + (f" ({j.reason})" if j.reason else "")
    return [j.id, j.name, j.user, state, gpus_cell(j), job_runtime(j)]


def job_rows(jobs: Sequence[Any]) -> str:
    return table([job_cells(j) for j in jobs], JOB_HEADERS)


GPU_HEADERS = ["GPU", "NAME", "UTIL", "MEMORY", "USED BY"]


def gpu_cells(g: Any) -> list[Any]:
    """One GPU's row of `nai gpus`."""
    holder = f"job {g.job} ({g.user})" if g.job else ""
    if g.slurm_job is not None and not g.job:  # launcher: slurm: someone else's Slurm job
        holder = f"Slurm job {g.slurm_job} ({g.user or '?'})"
    foreign = "; ".join(
        f"{f'job {p.job} strayed here:' if p.job else 'foreign'} pid {p.pid} "
        f"({p.user or '?'}, {format_size(p.used_memory)})" for p in g.foreign)
    return [g.index, f"{g.node}: {g.name}" if g.node else g.name, f"{g.utilization}%",
            f"{format_size(g.memory_used)} / {format_size(g.memory_total)}",
            " ".join(x for x in (holder, foreign) if x) or "free"]


def err(message: str) -> None:
    print(f"nai: {message}", file=sys.stderr)


def note(message: str) -> None:
    """Diagnostics and progress for people: stderr, so stdout stays data."""
    print(message, file=sys.stderr)


def report_pull(result: Any, what: str, dest: Any, body: dict[str, Any] | None, *,
                summary: bool = True) -> int:
    """Print a pull's outcome (a `nai_tui.pull.PullResult`): `body` with the counts and
    the kept files as JSON when given, else the folder; the kept files and (with
    `summary`) the counts on stderr. Returns the exit status: 0, or EXIT_KEPT when local
    files were kept."""
    kept = [{"path": k.path, "reason": k.reason} for k in result.kept]
    if body is not None:
        emit_json({**body, "to": str(dest), "downloaded": result.downloaded,
                   "skipped": result.skipped, "bytes": result.bytes, "kept": kept,
                   "resumed": result.resumed,
                   "stale_temporaries_removed": result.stale_removed})
    else:
        print(dest)
    if result.resumed:
        note(f"resumed {result.resumed} file(s) from where an interrupted download stopped")
    if result.stale_removed:
        note(f"removed {result.stale_removed} temporary file(s) an interrupted pull left "
             f"(no file wanted now begins with them)")
    for k in kept:
        note(f"not overwritten: {k['path']} ({k['reason']})")
    if summary:
        note(f"{what}: {result.downloaded} file(s) downloaded, {result.skipped} already "
             f"there" + (f", {len(kept)} kept as they are here (--force overwrites them)"
                         if kept else "") + f", into {dest}")
    return EXIT_KEPT if kept else 0


def duration_text(seconds: float | str) -> str:
    """A limit as people write it: 7200 -> "2h", 5400 -> "1h30m", 90 -> "1m30s"; text
    (a spec not yet read by a server) as it is."""
    if isinstance(seconds, str):
        return seconds
    parts, rest = [], max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, rest = divmod(rest, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


def job_limits(job: Any) -> str:
    """What a job runs under (`nai show`'s limits line): time, memory and CPUs."""
    spec = job.spec
    return ", ".join(part for part in (
        f"time {duration_text(spec['time_limit'])}" if spec.get("time_limit") else "",
        f"memory {format_size(spec['memory'])}" if spec.get("memory") else "",
        f"{spec['cpus']:g} cpus" if spec.get("cpus") else "") if part)


def job_note(job: Any) -> str:
    """The server's note on a job; one that timed out says the limit it reached (the
    server records the state, not a message, for that)."""
    notes = [job.message or ""]
    if job.state == "timed_out" and job.spec.get("time_limit"):
        notes.insert(0, f"stopped: it reached its time limit of "
                        f"{duration_text(job.spec['time_limit'])}")
    return "; ".join(n for n in notes if n)

"""How jobs, sizes and times look on screen: one place for colours and wording."""

from __future__ import annotations

import re

from rich.text import Text

from nai_server.protocol import TERMINAL_STATES, JobInfo, JobState, format_elapsed

# How the screens group the protocol's states: holding resources, waiting for them, done.
ACTIVE_STATES = (JobState.STARTING.value, JobState.RUNNING.value)
WAITING_STATES = (JobState.QUEUED.value, JobState.PREEMPTED.value)
END_STATES = tuple(s.value for s in JobState if s in TERMINAL_STATES)
ALL_STATES = (*ACTIVE_STATES, *WAITING_STATES, *END_STATES)

STATE_STYLE = {
    "queued": "yellow",
    "preempted": "yellow",
    "starting": "cyan",
    "running": "bold green",
    "succeeded": "green",
    "failed": "bold red",
    "cancelled": "dim",
    "timed_out": "red",
    "lost": "magenta",
}


def state_text(state: str) -> Text:
    """The state word in its colour."""
    return Text(state.replace("_", " "), style=STATE_STYLE.get(state, ""))


def is_ended(job: JobInfo) -> bool:
    return job.state in TERMINAL_STATES


def sort_key(job: JobInfo) -> tuple[int, float]:
    """Running first (longest running on top), then the queue in its order, then the
    most recent ends."""
    if job.state in ACTIVE_STATES:
        return (0, job.started_at or job.submitted_at)
    if job.state in WAITING_STATES:
        return (1, float(job.id))
    return (2, -(job.ended_at or job.submitted_at))


def index_ranges(indices: list[int]) -> str:
    """`[0, 1, 2, 3, 6]` → `0-3,6`."""
    parts: list[str] = []
    for i in sorted(indices):
        if parts and i == int(parts[-1].rsplit("-", 1)[-1]) + 1:
            parts[-1] = f"{parts[-1].split('-')[0]}-{i}"
        else:
            parts.append(str(i))
    return ",".join(parts)


def gpus_text(job: JobInfo, *, long: bool = False) -> str:
    """How many GPUs it holds and which, as the CLI says it (`2 (gpu 0,1)`), or as a
    narrow column has room for (`2:0,1`): never a bare index, which reads as a count.
    Else what it asked for."""
    if job.gpus:
        which = index_ranges(job.gpus)
        return f"{len(job.gpus)} (gpu {which})" if long else f"{len(job.gpus)}:{which}"
    wanted = job.spec.get("gpus", 1)
    if job.state in WAITING_STATES:
        return f"({wanted})" if wanted else "cpu"
    return "cpu" if not wanted else "-"


def runtime(job: JobInfo, now: float) -> str:
    """How long it ran (or runs); "-" when it never started."""
    if job.started_at is None:
        return "-"
    return format_elapsed((job.ended_at or now) - job.started_at)


def age(job: JobInfo, now: float) -> str:
    """How long ago it ended, else how long ago it was submitted."""
    return format_elapsed(now - (job.ended_at or job.submitted_at))


def note(job: JobInfo) -> str:
    """Why it waits, or how it ended."""
    if job.reason:
        return job.reason
    if job.state == "failed" and job.exit_code is not None:
        said = f"exit code {job.exit_code}"
        if not job.message or job.message.startswith(said):  # not "exit code 3: exit code 3"
            return job.message or said
        return f"{said}: {job.message}"
    return job.message or ""


_ERROR_LINE = re.compile(
    r"^\s*([\w.]*(Error|Exception|Interrupt|Exit)\b|error\b|fatal\b|FAILED\b|panic\b"
    r"|Killed\b|Segmentation fault|.*\b(out of memory|No such file|[Pp]ermission denied)\b)",
    re.IGNORECASE)
_FRAME = re.compile(r'^\s*(File "|at |\^+\s*$|~+\s*$|Traceback \(most recent call last\))')


def last_error_line(lines: list[str]) -> str | None:
    """The line of a failed job's log that says why: the last that reads like an error
    (`ModuleNotFoundError: No module named 'torch'`), else the last that is not part
    of a traceback's frames; None for a log with nothing in it."""
    fallback = None
    for line in reversed(lines):
        text = line.strip()
        if not text:
            continue
        if _ERROR_LINE.match(text):
            return clip(text, 300)
        if fallback is None and not _FRAME.match(line):
            fallback = clip(text, 300)
    return fallback


def fit_note(text: str, width: int) -> str:
    """A note cut to `width` so that what is left still says something: the specific
    part of "exit code 1: Traceback: CUDA out of memory" (its last clause) when the
    whole does not fit, and a cut at a word's end rather than inside one."""
    if len(text) <= width:
        return text
    tail = text.rsplit(": ", 1)[-1].strip()
    if tail and tail != text and len(tail) <= width:
        return tail
    text = tail or text
    cut = text[: max(0, width - 1)]
    space = cut.rfind(" ")
    if space >= width // 2:
        cut = cut[:space].rstrip(",;:")
    return cut + "…"


def clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


def bar(fraction: float, width: int) -> Text:
    """A horizontal bar, eighths resolution, green → yellow → red as it fills."""
    fraction = min(1.0, max(0.0, fraction))
    eighths = round(fraction * width * 8)
    full, part = divmod(eighths, 8)
    blocks = "█" * full + ("" if part == 0 or full >= width else " ▏▎▍▌▋▊▉"[part])
    style = "green" if fraction < 0.6 else "yellow" if fraction < 0.9 else "red"
    text = Text(blocks, style=style)
    text.append("·" * (width - len(blocks)), style="dim")
    return text


def kept_note(kept: tuple[str, ...], show: int = 3) -> str:
    """The end of a pull's notice naming local files it did not overwrite (changed
    here, so kept; the CLI's `--force` overwrites them), or "" when there were none."""
    if not kept:
        return ""
    names = ", ".join(kept[:show]) + (f" and {len(kept) - show} more" if len(kept) > show
                                      else "")
    return f"; kept {len(kept)} local file(s) that differ from the server's: {names}"

"""Per-user GPU use as `sshare` shows it: GPUs held now, decayed usage, fair-share
standing (usage over share: above 1 waits behind others) and use against quota. One
line for the GPU strip's title, and rows for the admin screen's Usage tab."""

from __future__ import annotations

from rich.text import Text

from nai_server.protocol.usage import UsageReport, UsageRow
from nai_tui.remote.usage import ordered, quota_use, standing_words

USAGE_HEADERS = ("KIND", "NAME", "GPUS NOW", "USAGE GPU-H", "SHARE", "STANDING",
                 "QUOTA USE")


def standing_text(row: UsageRow) -> Text:
    """`1.6× over` in red, `0.4×` in green: usage over fair share."""
    style = "bold red" if row.standing > 1.0 else "green" if row.standing < 0.9 else ""
    return Text(standing_words(row), style=style)


def usage_rows(report: UsageReport) -> list[list[str | Text]]:
    """The admin table's rows: users first (most usage on top), then groups."""
    return [[r.kind, r.name, str(r.gpus_in_use), f"{r.usage_gpu_hours:.1f}",
             f"{r.share:.0%}", standing_text(r), quota_use(r)] for r in ordered(report.rows)]


def strip_summary(report: UsageReport | None, me: str | None = None) -> str:
    """The GPU strip's title addition: users holding GPUs (most first), with their
    standing where it is over their share, and mine even when I hold none:
    `carol 4 (1.6× over) · alice 2 · bob 1`."""
    if report is None:
        return ""
    users = [r for r in report.rows if r.kind == "user" and (r.gpus_in_use or r.name == me)]
    users.sort(key=lambda r: (-r.gpus_in_use, r.name))
    parts = []
    for r in users:
        text = f"{r.name} {r.gpus_in_use}"
        if r.standing > 1.0:
            text += f" ({r.standing:.1f}× over)"
        parts.append(text)
    return " · ".join(parts)

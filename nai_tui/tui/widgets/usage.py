"""Per-user GPU use as `sshare` shows it: GPUs held now, decayed usage, fair-share
standing (usage over share: above 1 waits behind others) and use against quota. One
line for the GPU strip's title, and rows for the admin screen's Usage tab."""

from __future__ import annotations

from rich.text import Text

from nai_server.protocol.usage import UsageReport, UsageRow

USAGE_HEADERS = ("KIND", "NAME", "GPUS NOW", "USAGE GPU-H", "SHARE", "STANDING",
                 "QUOTA USE")


def standing_text(row: UsageRow) -> Text:
    """`1.6× over` in red, `0.4×` in green: usage over fair share."""
    if row.standing > 1.0:
        return Text(f"{row.standing:.1f}× over", style="bold red")
    return Text(f"{row.standing:.1f}×", style="green" if row.standing < 0.9 else "")


def quota_use(row: UsageRow) -> str:
    """`12.5/100 GPU-h in 30 d`, `≤4 GPUs`, both, or `-`."""
    parts = []
    if row.gpu_hours is not None:
        parts.append(f"{row.used_gpu_hours or 0:.1f}/{row.gpu_hours:g} GPU-h in "
                     f"{row.period_days} d")
    if row.max_gpus is not None:
        parts.append(f"{row.gpus_in_use}/{row.max_gpus} GPUs")
    return ", ".join(parts) or "-"


def usage_rows(report: UsageReport) -> list[list[str | Text]]:
    """The admin table's rows: users first (most usage on top), then groups."""
    rows = sorted(report.rows, key=lambda r: (r.kind != "user", -r.usage_gpu_hours, r.name))
    return [[r.kind, r.name, str(r.gpus_in_use), f"{r.usage_gpu_hours:.1f}",
             f"{r.share:.0%}", standing_text(r), quota_use(r)] for r in rows]


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

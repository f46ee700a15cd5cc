"""`GET /v1/usage`: each user's and group's GPU use, fair-share standing and quota use
(what `sshare` shows). A function of its own beside `ServerClient`, which it uses, and
the plain wording that both `nai usage` and the TUI print."""

from __future__ import annotations

from nai_server.protocol.usage import UsageReport, UsageRow
from nai_tui.remote.client import ServerClient


def read_usage(client: ServerClient) -> UsageReport:
    """The server's usage report (NotFound from a server older than the route)."""
    return client._reply(UsageReport, client._json("GET", "/v1/usage"))


def standing_words(row: UsageRow) -> str:
    """Usage over fair share: `1.6× over` above 1 (its jobs wait behind others'),
    else `0.4×`."""
    return f"{row.standing:.1f}× over" if row.standing > 1.0 else f"{row.standing:.1f}×"


def quota_use(row: UsageRow) -> str:
    """`12.5/100 GPU-h in 30 d`, `4/8 GPUs`, both, or `-`."""
    parts = []
    if row.gpu_hours is not None:
        parts.append(f"{row.used_gpu_hours or 0:.1f}/{row.gpu_hours:g} GPU-h in "
                     f"{row.period_days} d")
    if row.max_gpus is not None:
        parts.append(f"{row.gpus_in_use}/{row.max_gpus} GPUs")
    return ", ".join(parts) or "-"


def ordered(rows: list[UsageRow]) -> list[UsageRow]:
    """Users first (most usage on top), then groups."""
    return sorted(rows, key=lambda r: (r.kind != "user", -r.usage_gpu_hours, r.name))

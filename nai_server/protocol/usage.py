"""Who uses how much of the GPUs, as `sshare` shows it: `GET /v1/usage`."""

from __future__ import annotations

from typing import Literal

from nai_server.protocol.base import Reply


class UsageRow(Reply):
    """One user's or group's use: now, decayed (what fair share weighs), and against
    its quota. `standing` is usage over fair share (U/S): 1.0 is exactly its share,
    above 1 it has used more and its jobs wait behind others'."""

    kind: Literal["user", "group"]
    name: str
    gpus_in_use: int
    usage_gpu_hours: float  # decayed with the half-life
    share: float  # of all the decayed usage of its kind, 0..1
    standing: float  # U/S
    factor: float  # the fair-share priority factor, 2^(-U/S)
    max_gpus: int | None = None
    gpu_hours: float | None = None  # the quota, in its period
    used_gpu_hours: float | None = None  # in the quota's period, running jobs included
    period_days: int | None = None


class UsageReport(Reply):
    half_life_hours: float
    rows: list[UsageRow]

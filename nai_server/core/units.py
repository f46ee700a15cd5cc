"""Durations and sizes as people write them: parse "2h", "1h30m", "10GiB", and format back.

Pure and stdlib only; the job spec (core.spec) and the GPU and upload limits use these.
"""

from __future__ import annotations

import re

_DURATION_RE = re.compile(
    r"\s*(?:(?P<d>\d+(?:\.\d+)?)\s*(?:days?|d))?"
    r"\s*(?:(?P<h>\d+(?:\.\d+)?)\s*(?:hours?|hrs?|h))?"
    r"\s*(?:(?P<m>\d+(?:\.\d+)?)\s*(?:minutes?|mins?|m))?"
    r"\s*(?:(?P<s>\d+(?:\.\d+)?)\s*(?:seconds?|secs?|s))?\s*",
    re.IGNORECASE,
)
# [HH:]MM:SS as in Slurm; YAML 1.1 reads an unquoted 1:30:00 as the int 5400, which agrees.
_CLOCK_RE = re.compile(r"\s*(?:(\d+):)?(\d+):([0-5]\d)\s*")
_UNIT_SECONDS = {"d": 86400, "h": 3600, "m": 60, "s": 1}


def parse_duration(value: str | int) -> int:
    """Seconds in ``value``: an int, "90", "2h", "1h30m", "2h 30m", "1d" or "01:30:00"."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if not isinstance(value, str):
        raise ValueError(f"not a duration: {value!r}")
    if value.strip().isdigit():
        return int(value)
    if clock := _CLOCK_RE.fullmatch(value):
        hours, minutes, seconds = (int(part or 0) for part in clock.groups())
        return hours * 3600 + minutes * 60 + seconds
    match = _DURATION_RE.fullmatch(value)
    if match is None or not any(match.groupdict().values()):
        raise ValueError(f"not a duration (use e.g. 2h, 30m, 1h30m, 1d): {value!r}")
    return round(sum(float(n) * _UNIT_SECONDS[u] for u, n in match.groupdict().items() if n))


def format_duration(seconds: int) -> str:
    """Short form of a duration: 5400 → "1h30m", 90061 → "1d1h1m1s", 0 → "0s"."""
    parts, rest = [], max(0, int(seconds))
    for unit, size in _UNIT_SECONDS.items():
        count, rest = divmod(rest, size)
        if count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


def format_elapsed(seconds: float | None) -> str:
    """A running time as the job listings show it, two units at most: 42 → "42s",
    65 → "1m05s", 7380 → "2h03m", 90061 → "1d01h"; unknown or negative → "-"."""
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


_SIZE_RE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(?:([kmgtp])(i?)(b?)|b?)\s*", re.IGNORECASE)
_BINARY_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")


def parse_size(value: str | int) -> int:
    """Bytes in ``value``: an int, "512MiB", "10GiB", "16G", "1.5G" or "10GB".

    KiB/Ki/K are powers of 1024 (a bare letter as in Slurm's --mem); KB/MB/GB are powers
    of 1000, so "80GB" fits the card sold as 80 GB, which has a little more than 80e9 bytes.
    """
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    match = _SIZE_RE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"not a size (use e.g. 10GiB, 512MiB, 16G): {value!r}")
    number, prefix, binary, byte = match.groups()
    if not prefix:
        if "." in number:
            raise ValueError(f"a size in bytes must be a whole number: {value!r}")
        return int(number)
    base = 1024 if binary or not byte else 1000
    multiplier: int = base ** ("kmgtp".index(prefix.lower()) + 1)
    return round(float(number) * multiplier)


def format_size(size: int) -> str:
    """Binary units, one decimal: 10 * 2**30 → "10.0 GiB"; under 1 KiB: "512 B"."""
    value, unit = float(size), 0
    while value >= 1024 and unit < len(_BINARY_UNITS) - 1:
        value, unit = value / 1024, unit + 1
    return f"{size} B" if unit == 0 else f"{value:.1f} {_BINARY_UNITS[unit]}"

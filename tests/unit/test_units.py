"""Duration and size parsing and formatting (nai_server.core.units)."""

from __future__ import annotations

import pytest

from nai_server.core.units import (
    format_duration,
    format_elapsed,
    format_size,
    parse_duration,
    parse_size,
)

GiB = 1024**3
MiB = 1024**2


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90),
        ("90s", 90),
        ("30m", 1800),
        ("2h", 7200),
        ("1h30m", 5400),
        ("2h 30m", 9000),
        ("1d", 86400),
        ("1d2h3m4s", 93784),
        ("1.5h", 5400),
        ("2 hours", 7200),
        ("45min", 2700),
        ("01:30:00", 5400),
        ("1:30:00", 5400),
        ("10:00", 600),
        (3600, 3600),
    ],
)
def test_parse_duration(text: str | int, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "h", "2x", "30m2h", "1:75", "-5", -5, True, 1.5, None])
def test_parse_duration_rejects(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (45, "45s"), (90, "1m30s"), (5400, "1h30m"), (7200, "2h"), (90061, "1d1h1m1s")],
)
def test_format_duration_round_trips(seconds: int, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("10GiB", 10 * GiB),
        ("512MiB", 512 * MiB),
        ("512Mi", 512 * MiB),
        ("16G", 16 * GiB),
        ("1.5G", 3 * GiB // 2),
        ("10gib", 10 * GiB),
        ("10 GiB", 10 * GiB),
        ("10GB", 10 * 10**9),
        ("80GB", 80 * 10**9),
        ("1KB", 1000),
        ("1K", 1024),
        ("1024", 1024),
        ("1024B", 1024),
        (4096, 4096),
    ],
)
def test_parse_size(text: str | int, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("bad", ["", "GiB", "10XB", "1.5", "10 Gibibytes", "-1G", True, 1.5])
def test_parse_size_rejects(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_size(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0 B"),
        (512, "512 B"),
        (1024, "1.0 KiB"),
        (10 * GiB, "10.0 GiB"),
        (3 * GiB // 2, "1.5 GiB"),
    ],
)
def test_format_size(size: int, text: str) -> None:
    assert format_size(size) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "-"),
        (-1, "-"),
        (0, "0s"),
        (42.9, "42s"),
        (65, "1m05s"),
        (7380, "2h03m"),
        (90061, "1d01h"),
    ],
)
def test_format_elapsed(seconds: float | None, text: str) -> None:
    """The listings' running time: two units at most, the second zero-padded."""
    assert format_elapsed(seconds) == text

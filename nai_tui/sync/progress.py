"""Progress meters for folder sync: a rich bar on a terminal, nothing when piped."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Protocol


class Meter(Protocol):
    """One progress bar: told how many bytes were done, then closed."""

    def advance(self, n: int) -> None: ...

    def close(self) -> None: ...


ProgressFactory = Callable[[str, int], Meter]  # (description, total bytes) -> Meter


class SilentMeter:
    """A meter that shows nothing."""

    def advance(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def silent_progress(description: str, total: int) -> Meter:
    """A meter that shows nothing (output piped, or tests)."""
    return SilentMeter()


class _RichMeter:
    def __init__(self, description: str, total: int) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self._bar = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                             TransferSpeedColumn(), TimeRemainingColumn(),
                             console=Console(stderr=True))
        self._task = self._bar.add_task(description, total=total)
        self._bar.start()

    def advance(self, n: int) -> None:
        self._bar.advance(self._task, n)

    def close(self) -> None:
        self._bar.stop()


def rich_progress(description: str, total: int) -> Meter:
    """A rich bar on stderr with bytes, rate and time left."""
    return _RichMeter(description, total)


def auto_progress() -> ProgressFactory:
    """Bars when stderr is a terminal, nothing when it is piped."""
    return rich_progress if sys.stderr.isatty() else silent_progress

"""What the terminal UI is given rather than reaching for: how to get a client for a
server, how to move trees, and how long to wait before reconnecting.

The real implementations live here; fakes for tests live in `nai_tui.testing`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from nai_server.protocol import TreeInfo
from nai_tui.config import ServerEntry
from nai_tui.remote.backoff import RECONNECTS, Backoff
from nai_tui.remote.client import ServerClient

ClientFactory = Callable[[ServerEntry], ServerClient]
"""Builds a client for a configured server (may block: SSH)."""

Progress = Callable[[str, int, int], object]  # what it returns is ignored
"""Called with (what, bytes done, bytes in all) while a transfer runs."""


@dataclass(frozen=True)
class PulledFiles:
    """What a download did."""

    downloaded: int
    skipped: int
    bytes: int
    kept: tuple[str, ...] = ()  # local files not overwritten: they differ, changed here


class Transfers(Protocol):
    """Moves code up and outputs down."""

    def push(self, client: ServerClient, root: Path, progress: Progress) -> str:
        """Sync a folder to the server; return the tree id."""
        ...

    def pull(self, client: ServerClient, tree: TreeInfo, dest: Path, prefix: str,
             progress: Progress) -> PulledFiles:
        """Download the tree's entries at `prefix` ("" for all) into `dest`."""
        ...


class _Meter:
    """A `nai_tui.sync.push` progress meter that reports to a `Progress`, at most every
    `every` seconds (and always at the end), so a worker does not flood the UI."""

    def __init__(self, what: str, total: int, report: Progress, every: float) -> None:
        self.what, self.total, self.report, self.every = what, total, report, every
        self.done = 0
        self._last = 0.0

    def advance(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self._last >= self.every or self.done >= self.total:
            self._last = now
            self.report(self.what, self.done, self.total)

    def close(self) -> None:
        self.report(self.what, self.done, max(self.total, self.done))


def meter_factory(report: Progress, every: float = 0.05) -> Callable[[str, int], _Meter]:
    """A `sync.ProgressFactory` that feeds `report`."""
    return lambda what, total: _Meter(what, total, report, every)


class SyncTransfers:
    """`Transfers` over `nai_tui.sync.push` with the user's hash cache."""

    def __init__(self, cache_path: Path | None = None) -> None:
        self.cache_path = cache_path

    def _cache(self) -> Any:
        from nai_tui.sync.hashcache import HashCache

        return HashCache(self.cache_path)

    def push(self, client: ServerClient, root: Path, progress: Progress) -> str:
        from nai_tui.sync import push as sync  # late: starting the TUI should not pay for it

        cache = self._cache()
        try:
            return sync.push(client, root, cache=cache, progress=meter_factory(progress))
        finally:
            cache.close()

    def pull(self, client: ServerClient, tree: TreeInfo, dest: Path, prefix: str,
             progress: Progress) -> PulledFiles:
        from nai_tui.sync import push as sync

        cache = self._cache()
        try:
            result = sync.pull(client, tree, dest, paths_prefix=prefix, cache=cache,
                               progress=meter_factory(progress))
        finally:
            cache.close()
        return PulledFiles(result.downloaded, result.skipped, result.bytes,
                           tuple(k.path for k in result.kept))


def connect_entry(entry: ServerEntry) -> ServerClient:
    """The real factory: `nai_tui.remote.connect.connect` (local socket or SSH)."""
    from nai_tui.remote.connect import connect

    return connect(entry)


def reconnects(first: float | None = None, cap: float | None = None,
               **options: Any) -> Backoff:
    """The app's reconnect delays: the client's one backoff under `RECONNECTS`
    (`first` and `cap` in seconds to change it; `options` as `Backoff` takes them)."""
    policy = RECONNECTS.replace(first=RECONNECTS.first if first is None else first,
                                cap=RECONNECTS.cap if cap is None else cap)
    return Backoff(policy, **options)

"""Job listings kept encoded until what they show changes.

A listing of hundreds of jobs costs milliseconds of Python to filter, describe and
encode; a few clients looping on `nai jobs` kept the daemon's one interpreter busy
with that, and every other request (a `nai show`, a submit) waited its turn for it.
The same listing asked again is the same bytes until the store is written or the
scheduler's plan (a queued job's reason and estimated start) changes, so each answer
is kept with a stamp of both and served as is while the stamp still holds.

A stamp is read before the listing's snapshot is taken: a listing is never kept
under a stamp newer than what it shows, at worst under an older one (then rebuilt).
Two clients that miss the same listing at once build it once.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable

MAX_BYTES = 8 << 20  # encoded listings kept, in all
MAX_ENTRIES = 64

Stamp = tuple[object, ...]


class ListingCache:
    """Encoded answers by query, each valid while its stamp equals the current one."""

    def __init__(self, max_bytes: int = MAX_BYTES, max_entries: int = MAX_ENTRIES) -> None:
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self._entries: OrderedDict[Hashable, tuple[Stamp, bytes]] = OrderedDict()
        self._bytes = 0
        self._mutex = threading.Lock()  # guards the two dicts; never held while building
        self._building: dict[Hashable, threading.Lock] = {}
        self.builds = 0  # how many listings were built (tests count them)

    def get(self, key: Hashable, stamp: Callable[[], Stamp], build: Callable[[], bytes]) -> bytes:
        """The answer for `key`: kept if its stamp still holds, else built now."""
        now = stamp()
        with self._mutex:
            hit = self._lookup(key, now)
            if hit is not None:
                return hit
            gate = self._building.setdefault(key, threading.Lock())
        with gate:
            now = stamp()
            with self._mutex:
                hit = self._lookup(key, now)
            if hit is not None:
                return hit
            try:
                body = build()
                with self._mutex:
                    self.builds += 1
                    self._keep(key, now, body)
            finally:
                with self._mutex:
                    self._building.pop(key, None)
            return body

    def _lookup(self, key: Hashable, now: Stamp) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry[0] != now:  # dicts in a stamp compare by identity first, then value
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return entry[1]

    def _keep(self, key: Hashable, now: Stamp, body: bytes) -> None:
        if len(body) > self.max_bytes // 4:  # one huge page must not flush the rest
            return
        if key in self._entries:
            self._drop(key)
        self._entries[key] = (now, body)
        self._bytes += len(body)
        while self._bytes > self.max_bytes or len(self._entries) > self.max_entries:
            self._drop(next(iter(self._entries)))

    def _drop(self, key: Hashable) -> None:
        _, body = self._entries.pop(key)
        self._bytes -= len(body)

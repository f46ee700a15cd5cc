"""A store task the daemon runs in the background, one at a time (`nai-admin store
verify`, `nai-admin store gc`): its report, which the API answers while it runs, is
only ever copied out under a mutex, never held while the task reads the disk."""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable
from typing import Any

from nai_server.protocol import Conflict

Doc = dict[str, Any]


class BackgroundTask:
    """One run at a time in a thread of its own; `report()` tells how it goes."""

    def __init__(self, report: Doc) -> None:
        self._stop = threading.Event()  # set at close: the run ends where it is
        self._mutex = threading.Lock()  # guards _report only
        self._report = report
        self._thread: threading.Thread | None = None

    def _begin(self, report: Doc, target: Callable[..., None], args: tuple[Any, ...],
               name: str, busy: str) -> Doc:
        """Start `target(*args)` with a fresh `report`; Conflict (`busy`) if one runs."""
        with self._mutex:
            if self._report["state"] == "running":
                raise Conflict(busy)
            self._report = report
            self._thread = threading.Thread(target=target, args=args, name=name, daemon=True)
            self._thread.start()
            return copy.deepcopy(self._report)

    def running(self) -> bool:
        with self._mutex:
            return bool(self._report["state"] == "running")

    def report(self) -> Doc:
        """The running or last run's report (state "never" before the first)."""
        with self._mutex:
            return copy.deepcopy(self._report)

    def close(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _set(self, **fields: Any) -> None:
        with self._mutex:
            self._report.update(fields)

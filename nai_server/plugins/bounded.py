"""Calls into plugin code that cannot hold the daemon: each runs in a worker thread and
is waited for at most its timeout. Python cannot kill a thread, so a call that hangs
is abandoned, and until it returns its plugin is skipped (one stuck thread per plugin
at most, however many calls come)."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any


class PluginTimeout(Exception):
    """A plugin's call outlasted its timeout, or an earlier one still has not returned."""


class BoundedCalls:
    """Plugin calls in a pool of daemon threads (a stuck one must not keep the process
    from exiting, as a ThreadPoolExecutor's would), grown when none is idle, so a stuck
    thread never delays the others; with a record of stuck plugins."""

    def __init__(self, max_idle: int = 8) -> None:
        self._stuck: set[str] = set()
        self._guard = threading.Lock()
        self._tasks: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._idle = 0  # workers waiting for a task that no queued task has claimed
        self._max_idle = max_idle

    def call(self, plugin: str, timeout: float, fn: Callable[..., Any], *args: Any) -> Any:
        """`fn(*args)`'s result or exception; PluginTimeout after `timeout` seconds."""
        with self._guard:
            if plugin in self._stuck:
                raise PluginTimeout(f"an earlier call has not returned after its {timeout:g}s "
                                    f"timeout; skipped until it does")
        outcome: list[Any] = []
        done = threading.Event()

        def run() -> None:
            try:
                outcome.append((True, fn(*args)))
            except BaseException as exc:  # handed to the caller below
                outcome.append((False, exc))
            finally:
                with self._guard:  # with the check below: never stuck once done
                    done.set()
                    self._stuck.discard(plugin)

        self._hand(run)
        if not done.wait(timeout):
            with self._guard:
                if not done.is_set():
                    self._stuck.add(plugin)
            raise PluginTimeout(f"no answer within its {timeout:g}s timeout")
        ok, value = outcome[0]
        if ok:
            return value
        raise value

    def _hand(self, task: Callable[[], None]) -> None:
        with self._guard:
            if self._idle:
                self._idle -= 1
            else:
                threading.Thread(target=self._work, name="nai-plugin", daemon=True).start()
        self._tasks.put(task)

    def _work(self) -> None:
        while True:
            self._tasks.get()()
            with self._guard:
                if self._idle >= self._max_idle:
                    return
                self._idle += 1

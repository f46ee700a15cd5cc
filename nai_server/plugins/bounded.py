"""Calls into plugin code that cannot hold the daemon: each runs in a worker thread and
is waited for at most its timeout. Python cannot kill a thread, so a call that hangs
is abandoned and counted as stuck until it returns.

What a stuck call means depends on the caller. A notifier is simply skipped while one
of its calls is stuck (one stuck thread per notifier at most, however many events come).
A submit rule must not be skipped that way: a spec crafted to slow a rule would open a
window in which every later submit passes it unchecked. So a rule gets a few stuck
calls at most (`most`), the caller whose own call is stuck is answered "busy" at once
rather than let through, and when the rule has `most` stuck calls everyone waits a
bounded time (`wait`) for one to return, then is answered "busy" too."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any


class PluginTimeout(Exception):
    """A plugin's call outlasted its timeout."""


class PluginBusy(Exception):
    """The call was not made: earlier calls of the plugin are stuck. `yours` when one of
    them is the same caller's (`owner`)."""

    def __init__(self, message: str, *, yours: bool, stuck: int) -> None:
        super().__init__(message)
        self.yours, self.stuck = yours, stuck


class BoundedCalls:
    """Plugin calls in a pool of daemon threads (a stuck one must not keep the process
    from exiting, as a ThreadPoolExecutor's would), grown when none is idle, so a stuck
    thread never delays the others; with a record of stuck calls per plugin."""

    def __init__(self, max_idle: int = 8) -> None:
        self._stuck: dict[str, dict[object, str | None]] = {}  # plugin → call → owner
        self._guard = threading.Condition()
        self._tasks: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._idle = 0  # workers waiting for a task that no queued task has claimed
        self._max_idle = max_idle

    def stuck(self, plugin: str) -> int:
        """How many of `plugin`'s calls outlasted their timeout and still run (its
        per-user keys, `plugin@user` and `plugin:check`, included)."""
        with self._guard:
            return sum(len(calls) for key, calls in self._stuck.items()
                       if key == plugin or key.startswith((f"{plugin}@", f"{plugin}:")))

    def call(self, plugin: str, timeout: float, fn: Callable[..., Any], *args: Any,
             owner: str | None = None, most: int = 1, wait: float = 0.0) -> Any:
        """`fn(*args)`'s result or exception; PluginTimeout after `timeout` seconds.
        PluginBusy, without calling: at once while one of `owner`'s calls is stuck, and
        while `plugin` has `most` stuck calls once `wait` seconds passed without one
        returning."""
        token = object()
        self._admit(plugin, timeout, owner, most, wait)
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
                    calls = self._stuck.get(plugin)
                    if calls is not None and calls.pop(token, 0) != 0:
                        if not calls:
                            del self._stuck[plugin]
                        self._guard.notify_all()

        self._hand(run)
        if not done.wait(timeout):
            with self._guard:
                if not done.is_set():
                    self._stuck.setdefault(plugin, {})[token] = owner
            raise PluginTimeout(f"no answer within its {timeout:g}s timeout")
        ok, value = outcome[0]
        if ok:
            return value
        raise value

    def _admit(self, plugin: str, timeout: float, owner: str | None,
               most: int, wait: float) -> None:
        deadline = time.monotonic() + wait
        with self._guard:
            while True:
                calls = self._stuck.get(plugin, {})
                yours = owner is not None and owner in calls.values()
                if not yours and len(calls) < most:
                    return
                left = deadline - time.monotonic()
                if yours or left <= 0:  # the owner of a stuck call never waits: many
                    break  # such submits would hold the daemon's request threads
                self._guard.wait(left)
        if yours:
            raise PluginBusy(f"an earlier call for {owner} has not returned after its "
                             f"{timeout:g}s timeout", yours=True, stuck=len(calls))
        raise PluginBusy(f"{len(calls)} earlier call(s) have not returned after their "
                         f"{timeout:g}s timeout", yours=False, stuck=len(calls))

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

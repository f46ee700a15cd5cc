"""Calls into plugin code that cannot hold the daemon: each runs in a worker thread and
is waited for at most its timeout. Python cannot kill a thread, so a call that hangs
is abandoned, and until it returns its plugin is skipped (one stuck thread per plugin
at most, however many calls come)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


class PluginTimeout(Exception):
    """A plugin's call outlasted its timeout, or an earlier one still has not returned."""


class BoundedCalls:
    """Plugin calls in daemon threads (a stuck one must not keep the process from
    exiting, as a ThreadPoolExecutor's would), with a record of stuck plugins."""

    def __init__(self) -> None:
        self._stuck: set[str] = set()
        self._guard = threading.Lock()

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

        threading.Thread(target=run, name=f"nai-plugin-{plugin}", daemon=True).start()
        if not done.wait(timeout):
            with self._guard:
                if not done.is_set():
                    self._stuck.add(plugin)
            raise PluginTimeout(f"no answer within its {timeout:g}s timeout")
        ok, value = outcome[0]
        if ok:
            return value
        raise value

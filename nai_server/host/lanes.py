"""Work done for many users, so that one user's slow work holds up theirs alone.

A shared pool of N threads lets one user stall everyone: the outputs of their jobs are
read by helpers running as them, which they may stop (SIGSTOP, from any process of
theirs) or slow (a folder of millions of files), and each such read holds a thread until
its deadline. `Lanes` gives each key (a user) threads of its own instead, at most
`per_key` at once, started when work arrives and ended when the key has none left, so
an idle daemon holds no threads and a stalled user's work waits only behind their own.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")
Work = tuple[Future[Any], Callable[..., Any], tuple[Any, ...]]


class Lanes:
    """Runs work by key: in order of submission per key, at most `per_key` at once."""

    def __init__(self, per_key: int, name: str) -> None:
        if per_key < 1:
            raise ValueError("a lane needs at least one thread")
        self.per_key = per_key
        self.name = name
        self._lock = threading.Lock()
        self._waiting: dict[str, deque[Work]] = {}
        self._running: dict[str, int] = {}
        self._threads: set[threading.Thread] = set()
        self._closed = False

    def submit(self, key: str, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Run `fn(*args)` in `key`'s lane; its future."""
        future: Future[T] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot submit work after shutdown")
            self._waiting.setdefault(key, deque()).append((future, fn, args))
            if self._running.get(key, 0) < self.per_key:
                self._running[key] = self._running.get(key, 0) + 1
                thread = threading.Thread(target=self._work, args=(key,), daemon=True,
                                          name=f"{self.name}-{key}")
                self._threads.add(thread)
                thread.start()  # (under the lock: shutdown sees it)
        return future

    def _work(self, key: str) -> None:
        while True:
            with self._lock:
                queue = self._waiting.get(key)
                if not queue:
                    self._waiting.pop(key, None)
                    self._running[key] -= 1
                    if not self._running[key]:
                        del self._running[key]
                    self._threads.discard(threading.current_thread())
                    return
                future, fn, args = queue.popleft()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn(*args)
            except BaseException as exc:
                future.set_exception(exc)
            else:
                future.set_result(result)

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        """No more work; with `cancel_futures`, work not begun is cancelled; with
        `wait`, until the work begun has ended."""
        with self._lock:
            self._closed = True
            if cancel_futures:
                for queue in self._waiting.values():
                    for future, _fn, _args in queue:
                        future.cancel()
                    queue.clear()
            threads = list(self._threads)
        if wait:
            for thread in threads:
                thread.join()

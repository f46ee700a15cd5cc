"""Notifiers at work. Job state changes are seen where the store records them (under the
daemon's lock: only noted there), handed to a bounded queue once committed, and told
to each enabled `nai.notifiers` plugin by one worker thread, each call bounded in
time. Nothing here waits on a plugin while holding the lock or the scheduler's tick."""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any

from nai_server.plugins.bounded import BoundedCalls
from nai_server.plugins.contracts import JobEvent, Kind
from nai_server.plugins.registry import Hook, PluginRegistry
from nai_server.plugins.subscriptions import Subscriptions

log = logging.getLogger("nai.plugins")

Doc = dict[str, Any]
QUEUE_SIZE = 10_000  # events waiting for the notifiers; beyond it, new ones are dropped
DROP_LOG_EVERY = 60.0

_FAILED = {"failed", "timed_out", "lost"}
_HOLDING = {"starting", "running"}


def job_event(before: str | None, job: Doc) -> JobEvent | None:
    """The event a state change from `before` to `job["state"]` is, if any."""
    after = job.get("state")
    if after == before:
        return None
    if after == "running":
        event = "started"
    elif after == "succeeded":
        event = "succeeded"
    elif after in _FAILED:
        event = "failed"
    elif after == "cancelled":
        event = "cancelled"
    elif after == "queued" and before in _HOLDING:
        event = "preempted"  # the runtime records preempted → queued in one write
    else:
        return None
    return JobEvent(event=event, job_id=job["id"], user=job["user"], group=job.get("group"),
                    name=(job.get("spec") or {}).get("name") or f"job-{job['id']}",
                    state=str(after),
                    at=float(job.get("ended_at") or job.get("started_at") or time.time()),
                    exit_code=job.get("exit_code"), message=job.get("message"))


class Notifiers:
    """Tell enabled notifier plugins of job events, off the daemon's lock and tick."""

    def __init__(self, registry: PluginRegistry, calls: BoundedCalls,
                 size: int = QUEUE_SIZE) -> None:
        self.registry = registry
        self._seen = -1
        self._hooks: list[Hook] = []
        self.calls = calls
        self._queue: queue.Queue[JobEvent | None] = queue.Queue(maxsize=size)
        self._noted: list[JobEvent] = []
        self._guard = threading.Lock()
        self._worker: threading.Thread | None = None
        self.dropped = 0
        self._drop_logged = 0.0
        self.users: Subscriptions | None = None  # users' own choices, set by the host

    @property
    def hooks(self) -> list[Hook]:
        """The enabled notifiers (rebuilt when an admin enabled or disabled one)."""
        if self._seen != self.registry.generation:
            self._seen = self.registry.generation
            self._hooks = self.registry.hooks(Kind.NOTIFIER)
        return self._hooks

    def observe(self, store: Any) -> None:
        """Note the state changes the store makes (no notifier installed, nothing to
        note). Composition-level: the runtime that moves jobs knows no plugins."""
        if self.registry.installed(Kind.NOTIFIER):
            store.watch_states(self._note)

    def _note(self, before: str | None, doc: Doc) -> None:
        event = job_event(before, doc)
        if event is not None:
            with self._guard:
                self._noted.append(event)

    def discard(self) -> None:
        """Forget events noted since the last publish (their commit failed)."""
        with self._guard:
            self._noted.clear()

    def publish(self) -> None:
        """Queue the events noted so far; call once their changes are committed."""
        with self._guard:
            events, self._noted = self._noted, []
        for event in events:
            self.put(event)

    def put(self, event: JobEvent) -> None:
        """Queue one event for the notifiers, never waiting: dropped when the queue is
        full (the notifiers are far behind), with a line in the log now and then."""
        if not self.hooks and not (self.users is not None and self.users.any()):
            return
        with self._guard:
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, name="nai-notifiers",
                                                daemon=True)
                self._worker.start()
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            self.dropped += 1
            now = time.monotonic()
            if now - self._drop_logged >= DROP_LOG_EVERY:
                self._drop_logged = now
                log.warning("notifiers are behind: %d job event(s) dropped so far",
                            self.dropped)

    def _work(self) -> None:
        while (event := self._queue.get()) is not None:
            for hook in self.hooks:
                self._tell(hook, event)
            if self.users is not None:
                self._tell_owner(self.users, event)
            self._queue.task_done()
        self._queue.task_done()

    def _tell(self, hook: Hook, event: JobEvent) -> None:
        try:
            self.calls.call(hook.name, hook.config.timeout, _run, hook, event)
        except Exception as exc:
            log.error("notifier %s failed on %s of job %s: %s: %s", hook.name, event.event,
                      event.job_id, type(exc).__name__, exc)

    def _tell_owner(self, users: Subscriptions, event: JobEvent) -> None:
        """Tell the job's owner, as they chose; never anyone else. Each user's calls
        are bounded and counted apart: a user whose address hangs delays only theirs."""
        for sub in users.of(event.user):
            hook = users.deliverer(sub.via) if event.event in sub.events else None
            if hook is None:
                continue
            try:
                self.calls.call(f"{hook.name}@{event.user}", hook.config.timeout, _deliver,
                                hook, event, sub.target)
            except Exception as exc:
                log.warning("notifier %s failed on %s of job %s for %s (subscription %s): "
                            "%s: %s", hook.name, event.event, event.job_id, event.user,
                            sub.id, type(exc).__name__, exc)

    def drain(self, timeout: float = 10.0) -> bool:
        """Wait until queued events have been told (tests); False if not in time."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    def close(self) -> None:
        if self._worker is not None:
            try:
                self._queue.put_nowait(None)
            except queue.Full:
                pass  # a daemon thread: it ends with the process


def _run(hook: Hook, event: JobEvent) -> Any:
    return hook(event=event, options=dict(hook.config.options))


def _deliver(hook: Hook, event: JobEvent, target: str) -> Any:
    return hook(event=event, target=target, options=dict(hook.config.options))

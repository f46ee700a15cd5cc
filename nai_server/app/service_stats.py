"""Request metrics of services' replicas, kept in memory by the proxy (since the
daemon started): counts, errors, the rate over the last minute, and latency
percentiles over the most recent requests; and a service's view with them."""

from __future__ import annotations

import collections
import statistics
import threading
from typing import Any

from nai_server.core.processing import ANNOTATOR_KIND, is_session
from nai_server.core.service_rules import handle_pid, live
from nai_server.protocol.services import ReplicaInfo, RequestStats, ServiceInfo

RECENT = 2048  # latencies kept per replica for the percentiles
WINDOW = 60.0  # seconds the rate is measured over


class _Book:
    __slots__ = ("errors", "latencies", "outstanding", "requests", "times")

    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.outstanding = 0
        self.latencies: collections.deque[float] = collections.deque(maxlen=RECENT)
        self.times: collections.deque[float] = collections.deque()


class RequestBook:
    """Per (service, replica index): what the proxy did."""

    def __init__(self) -> None:
        self._books: dict[tuple[str, int], _Book] = {}
        self._lock = threading.Lock()

    def _book(self, service: str, index: int) -> _Book:
        return self._books.setdefault((service, index), _Book())

    def outstanding(self, service: str, index: int) -> int:
        book = self._books.get((service, index))
        return book.outstanding if book else 0

    def begin(self, service: str, index: int) -> None:
        with self._lock:
            self._book(service, index).outstanding += 1

    def end(self, service: str, index: int, now: float, seconds: float, error: bool) -> None:
        with self._lock:
            book = self._book(service, index)
            book.outstanding = max(0, book.outstanding - 1)
            self._count(book, now, seconds, error)

    def failed(self, service: str, index: int, now: float) -> None:
        """A request no replica answered (counted as an error of `index`)."""
        with self._lock:
            book = self._book(service, index)
            book.requests += 1
            book.errors += 1
            book.times.append(now)

    @staticmethod
    def _count(book: _Book, now: float, seconds: float, error: bool) -> None:
        book.requests += 1
        book.errors += error
        book.latencies.append(seconds)
        book.times.append(now)
        while book.times and book.times[0] < now - WINDOW:
            book.times.popleft()

    def forget(self, service: str) -> None:
        with self._lock:
            for key in [k for k in self._books if k[0] == service]:
                del self._books[key]

    def stats(self, service: str, index: int | None, now: float) -> RequestStats:
        """One replica's, or (index None) the whole service's."""
        with self._lock:
            books = [b for (s, i), b in self._books.items()
                     if s == service and (index is None or i == index)]
            latencies = [x for b in books for x in b.latencies]
            recent = sum(1 for b in books for t in b.times if t >= now - WINDOW)
            requests = sum(b.requests for b in books)
            errors = sum(b.errors for b in books)
        p50 = p99 = None
        if len(latencies) >= 2:
            cuts = statistics.quantiles(latencies, n=100, method="inclusive")
            p50, p99 = cuts[49] * 1000, cuts[98] * 1000
        elif latencies:
            p50 = p99 = latencies[0] * 1000
        return RequestStats(requests=requests, errors=errors, per_second=recent / WINDOW,
                            p50_ms=p50, p99_ms=p99)


def service_info(doc: dict[str, Any], book: RequestBook, now: float,
                 may_write: bool) -> ServiceInfo:
    """What callers see of a service: its document's fields, its live replicas, and the
    proxy's counts."""
    name = doc["name"]
    replicas = [ReplicaInfo(
        index=r["index"], state=r["state"], model=r["model"], gpus=r["gpus"],
        pid=handle_pid(r.get("handle")), started_at=r.get("started_at"), ready_at=r.get("ready_at"),
        restarts=r.get("restarts", 0), message=r.get("message"),
        stats=book.stats(name, r["index"], now))
        for r in sorted(live(doc), key=lambda r: r["index"])]
    return ServiceInfo(
        name=name, owner=doc["owner"], user=doc["user"], model=doc["model"],
        state=doc["state"], visibility=doc["visibility"], public=doc["public"],
        replicas=doc["replicas"], gpus=doc["gpus"], idle_timeout=doc["idle_timeout"],
        max_batch=doc["max_batch"], max_wait_ms=doc["max_wait_ms"],
        created_at=doc["created_at"], updated_at=doc["updated_at"],
        message=doc.get("message"), replica_info=replicas,
        stats=book.stats(name, None, now), may_write=may_write, **session_fields(doc))


def session_fields(doc: dict[str, Any]) -> dict[str, Any]:
    """An annotate session's fields of its view (core.processing.is_session)."""
    if not is_session(doc):
        return {}
    note = doc["annotation"]
    return {"kind": ANNOTATOR_KIND, "labels_to": note["to"], "saved": note.get("saved"),
            "plugin": f"{note['plugin']} {note.get('version') or ''}".strip()}

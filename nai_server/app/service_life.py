"""Keeping services' replicas running: the supervisor's step, in a thread of its own.

Each step observes every replica outside the lock (service_watch: its process, its
health path with deadlines and in parallel, the user it runs as), then decides under
the lock, from what was seen and in memory only: a replica that answers is ready; one that
stops answering is unhealthy, and restarted once it stays so; one that died is
restarted with backoff; too many failures in the window fail the service, with the
last lines of the log in its message. Waiting replicas get free GPUs within their
owner's quota (the job scheduler sees replicas' GPUs as held: `running()`), and are
launched outside the lock once their GPUs are recorded, as jobs are; signals and the
removal of replicas' directories wait for the lock's release too. Stopped and failed
services are removed in time (`keep_stopped`, `keep_stopped_seconds`).

A new model version rolls: one replica of the new version starts; once it is ready
one of the old version stops, until none is left. A new replica that fails or never
becomes ready rolls the service back to the old version.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nai_server.app import service_gpus, service_watch
from nai_server.app.service_watch import Endpoint, Observed, Owners, Seen
from nai_server.config import ServerConfig
from nai_server.core import scheduling as sched
from nai_server.core import service_rules as rules
from nai_server.core.service_rules import live, replica_dir
from nai_server.core.states import SERVICE_TERMINAL, ServiceState
from nai_server.host.gpu_watch import Foreign
from nai_server.host.replicas import UNKNOWN, ReplicaHost, ReplicaRefused, ReplicaStart
from nai_server.host.runtime import JobRuntime
from nai_server.store.atomic import CommitLock
from nai_server.store.db import TinyDbStore
from nai_server.store.service_records import ServiceRecords

log = logging.getLogger("nai.services")
Doc = dict[str, Any]
_P, _S, _R, _U = (ServiceState.PENDING, ServiceState.STARTING, ServiceState.READY,
                  ServiceState.UNHEALTHY)
SWEEP_SECONDS = 600.0  # replica directories no document names are looked for this often
__all__ = ["Endpoint", "Supervisor"]


class Supervisor:
    """The services' half of the daemon's loop (see the module's doc)."""

    def __init__(self, config: ServerConfig, store: TinyDbStore, records: ServiceRecords,
                 lock: CommitLock, host: ReplicaHost, runtime: JobRuntime,
                 clock: Callable[[], float]) -> None:
        self.config = config
        self.settings = config.services
        self.store = store
        self.records = records
        self.lock = lock
        self.host = host
        self.runtime = runtime
        self.clock = clock
        self.endpoints: dict[str, list[Endpoint]] = {}  # ready replicas, by service
        self.wanted_now: set[str] = set()  # idle services a request asked to start
        self.last_request: dict[str, float] = {}
        self.watch = service_watch.Watch(host, self.settings)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._docs: list[Doc] = []  # this step's, as decided
        self._owners: Owners = {}  # this step's users' accounts, looked up outside the lock
        self._acts: list[Callable[[], None]] = []  # what the decisions ask, after the lock
        self._read: tuple[object, list[Doc]] | None = None  # see `docs`
        self._swept_at: float | None = None
        # Requests in flight to a replica (the proxy's count): drained before SIGTERM.
        self.outstanding: Callable[[str, int], int] = lambda _service, _index: 0
        # A removed service's state in memory (the proxy's counts) goes with it.
        self.forget: Callable[[str], None] = lambda _service: None
        # Told every step's documents, after the lock (annotate sessions that ended).
        self.settle: Callable[[list[Doc]], None] = lambda _docs: None

    # --- the thread -------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="nai-services", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.watch.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except Exception:
                log.exception("services step failed; retrying")
            self._wake.wait(self.settings.probe_seconds)
            self._wake.clear()

    # --- what the job scheduler and the GPU listing see (under the lock) -------------

    def docs(self) -> list[Doc]:
        """Every service document, read once while the store is unchanged: the job
        tick's callers below share it (read-only; under the lock)."""
        generation = self.store.generation()
        if self._read is None or self._read[0] != generation:
            self._read = (generation, self.records.list())
        return self._read[1]

    def running(self) -> list[sched.RunningJob]:
        return service_gpus.running(self.docs(), self.host.gpus_placed)

    def gpu_holders(self) -> dict[int, tuple[str, str]]:
        return service_gpus.holders(self.docs())

    def not_foreign(self, foreign: Foreign) -> Foreign:
        return service_gpus.without_replicas(foreign, self.docs())

    # --- one step ---------------------------------------------------------------------

    def step(self, now: float | None = None) -> None:
        now = self.clock() if now is None else now
        with self.lock:
            docs = [d for d in self.docs() if d["replica_docs"]
                    or d["state"] not in SERVICE_TERMINAL]
        owners = self._owners = self.watch.owners(docs)  # no lock held: slow lookups
        seen = self.watch.observe(docs, owners)
        launches: list[tuple[str, int, ReplicaStart]] = []
        self._acts = []
        with self.lock:
            self._docs = self.records.list()  # decided together: GPUs given are seen
            for doc in self._docs:
                before = repr(doc)
                self._decide(doc, seen, now, launches)
                if repr(doc) != before:
                    doc["updated_at"] = now
                    self.records.put(doc)
            self._expire(now)
            self.endpoints = service_watch.endpoints(self._docs, owners, self.host,
                                                     SERVICE_TERMINAL)
        self._act()  # committed: what the decisions asked for
        self.settle(self._docs)
        self.host.retry_cgroups()
        for name, run, start in launches:  # committed: a crash now re-adopts them
            self._launch(name, run, start, now)
        if self._swept_at is None or now - self._swept_at >= SWEEP_SECONDS:
            self._swept_at = now  # directories left by a crash, or of removed services
            service_watch.sweep(self.host, self._docs)

    def _act(self) -> None:
        acts, self._acts = self._acts, []
        for act in acts:
            try:
                act()
            except Exception:
                log.exception("services: an action failed")

    def _expire(self, now: float) -> None:
        """Stopped and failed services past the ones kept are removed (their directories
        went with their replicas; the sweep after takes any left)."""
        gone = rules.expired(self._docs, now, self.settings.keep_stopped,
                             self.settings.keep_stopped_seconds)
        for name in gone:
            self.records.remove(name)
            self.last_request.pop(name, None)
            self.forget(name)
        if gone:
            self._docs = [d for d in self._docs if d["name"] not in gone]
            self._swept_at = None
            log.info("services removed (stopped long enough): %s", ", ".join(gone))

    def _decide(self, doc: Doc, seen: Observed, now: float,
                launches: list[tuple[str, int, ReplicaStart]]) -> None:
        terminal = doc["state"] in SERVICE_TERMINAL
        if terminal:
            for r in live(doc):
                self._retire(r, now)
        for r in list(doc["replica_docs"]):
            if r.get("stopping"):
                self._drain(doc, r, seen.get(replica_dir(doc, r)), now)
            elif r["state"] == _P and not r.get("handle"):  # (else queued in Slurm)
                self._place(doc, r, now, launches)
            else:
                self._watch(doc, r, seen.get(replica_dir(doc, r)), now)
            if doc["state"] in SERVICE_TERMINAL and not terminal:  # it failed just now
                return self._decide(doc, seen, now, launches)
        if not terminal:
            self._reconcile(doc, now)
            doc["state"] = str(rules.service_state(r["state"] for r in live(doc)))

    # --- replicas ---------------------------------------------------------------------

    def _where(self, doc: Doc, r: Doc) -> Path:
        return self.host.path(replica_dir(doc, r))

    def _retire(self, r: Doc, now: float, grace: float | None = None) -> None:
        r["stopping"] = True
        r["kill_at"] = now + (self.settings.stop_grace_seconds if grace is None else grace)

    def _signal(self, handle: str, sig: int) -> None:
        self._acts.append(lambda: self.host.signal(handle, sig))

    def _remove(self, where: Path) -> None:
        self._acts.append(lambda: self.host.remove(where))

    def _drain(self, doc: Doc, r: Doc, seen: Seen | None, now: float) -> None:
        """A replica on its way out: SIGTERM, SIGKILL after the grace; once its process
        is gone its directory and GPUs go too."""
        if r["state"] == _P and not r.get("handle"):  # never started: nothing of its own
            doc["replica_docs"].remove(r)
            return
        if seen is None or seen.status == "unknown" or (
                not r.get("handle") and seen.adopted == UNKNOWN):  # not known yet
            return
        if not r.get("handle") and seen.adopted:  # a launch the daemon died in
            r["handle"] = seen.adopted
        elif r.get("handle") and seen.status in ("running", "queued"):
            pass
        else:  # gone (and reaped, when this daemon started it, by the look)
            self._remove(self._where(doc, r))
            doc["replica_docs"].remove(r)
            return
        busy = self.outstanding(doc["name"], r["index"]) and now < r["kill_at"]
        if not r.get("termed") and not busy:  # its requests finish first
            self._signal(r["handle"], signal.SIGTERM)
            r["termed"] = True
        if now >= r["kill_at"]:
            self._signal(r["handle"], signal.SIGKILL)

    def _place(self, doc: Doc, r: Doc, now: float,
               launches: list[tuple[str, int, ReplicaStart]]) -> None:
        if now < r.get("retry_at", 0) or doc["user"] not in self._owners:
            return  # (a service new since the look: its user is looked up next step)
        owner = self._owners[doc["user"]]
        if owner is None:
            return self._fail(doc, f"user {doc['user']} has no unix account on this host")
        # A host that places replicas itself (Slurm) is given a count: gpus_wanted.
        gpus = self._free_gpus(doc, r["gpus_wanted"]) if self.host.places_gpus else ()
        if gpus is None:
            return
        r.update(state=str(_S), gpus=list(gpus), started_at=now, ready_at=None, handle=None,
                 run=doc["runs"] + 1, message=None)
        doc["runs"] += 1
        model, _, version = r["model"].partition("@")
        env = {"NAI_SERVICE": doc["name"], "NAI_MODEL": r["model"], "NAI_MODEL_NAME": model,
               "NAI_MODEL_VERSION": version, "NAI_REPLICA": str(r["index"])}
        for key in ("max_batch", "max_wait_ms"):
            if doc.get(key) is not None:
                env[f"NAI_{key.upper()}"] = str(doc[key])
        env.update(doc.get("env") or {})  # the daemon's own (an annotate session's)
        launches.append((doc["name"], r["run"], ReplicaStart(
            self._where(doc, r), r["tree_id"], r["command"], owner, tuple(gpus), env,
            r.get("memory"), r.get("cpus"), r["gpus_wanted"], doc["owner"].get("group"))))

    def _free_gpus(self, doc: Doc, count: int) -> tuple[int, ...] | None:
        found = service_gpus.free_gpus(self.runtime, self.store, self._docs, doc, count)
        if not isinstance(found, str):
            return found
        for r in live(doc):  # why they wait
            if r["state"] == _P:
                r["message"] = found
        return None

    def _watch(self, doc: Doc, r: Doc, seen: Seen | None, now: float) -> None:
        if seen is None:  # launched since the look (or not yet): the next step
            return
        if seen.status == "unknown":  # its scheduler not asked yet
            return
        if not r.get("handle"):  # the daemon died launching it (launches end in a step)
            return self._lost(doc, r, seen)
        if seen.status == "queued":  # in its scheduler's queue (Slurm's), with its reason
            r.update(state=str(_P), message=seen.why, started_at=now)
            return
        if r["state"] == _P:  # out of the queue: its start_timeout counts from now
            r["state"] = str(_S)
        settings = self.settings
        if seen.status != "running":
            return self._died(doc, r, now, "its process ended", seen.tail, seen.code)
        if seen.healthy:
            if r["state"] != _R:
                r.update(state=str(_R), ready_at=now, message=None, since=None)
            return
        why = seen.why
        r["message"] = why
        if r["state"] == _S and now - (r.get("started_at") or now) > settings.start_timeout:
            self._died(doc, r, now, f"not ready after {settings.start_timeout:g}s ({why})",
                       seen.tail)
        elif r["state"] == _R:
            r.update(state=str(_U), since=now)
        elif r["state"] == _U and now - (r.get("since") or now) > settings.unhealthy_seconds:
            self._died(doc, r, now, f"unhealthy for {settings.unhealthy_seconds:g}s ({why})",
                       seen.tail)

    def _lost(self, doc: Doc, r: Doc, seen: Seen) -> None:
        """The daemon died while launching it: adopt its wrapper, or start it again."""
        if seen.adopted == UNKNOWN:  # its scheduler has not said yet
            return
        if seen.adopted is not None:
            r["handle"] = seen.adopted
            return
        self._remove(self._where(doc, r))
        r.update(state=str(_P), gpus=[], handle=None)

    def _died(self, doc: Doc, r: Doc, now: float, why: str, tail: str,
              code: int | None = None) -> None:
        """A replica that ended or will not answer: it is killed (its GPUs kept until it
        is gone) and a new one waits for its backoff; or the service fails (at once if
        it exited with rules.NO_RESTART), or a rolling update is rolled back."""
        tombstone = {**r, "stopping": True, "kill_at": now, "termed": True}
        doc["replica_docs"].append(tombstone)
        restarts = r.get("restarts", 0) + 1
        r.update(state=str(_P), gpus=[], handle=None, restarts=restarts,
                 retry_at=now + rules.backoff(restarts), ready_at=None,
                 message=f"restarting: {why}")
        log.info("service %s replica %s: %s", doc["name"], r["index"], why)
        if r["model"] != doc["model"]:  # an old one during an update: not a failure
            return
        old = [x for x in live(doc) if x["model"] != doc["model"]]
        if old:
            return self._roll_back(doc, old[0], f"{why}; last log lines:\n{tail}")
        doc["failures"] = [t for t in doc.get("failures", [])
                           if now - t <= self.settings.restart_window] + [now]
        if code == rules.NO_RESTART:
            self._fail(doc, f"replica {r['index']} exited with status {code}: its "
                            f"configuration is wrong, and starting it again cannot help; "
                            f"last log lines:\n{tail}")
        elif rules.too_many_failures(doc["failures"], now, self.settings.restart_window,
                                   self.settings.max_restarts):
            self._fail(doc, f"replica {r['index']} failed {len(doc['failures'])} times in "
                            f"{self.settings.restart_window:g}s, last: {why}; last log "
                            f"lines:\n{tail}")

    def _fail(self, doc: Doc, message: str) -> None:
        doc.update(state=str(ServiceState.FAILED), message=message)
        now = self.clock()
        for r in live(doc):
            r["state"] = str(ServiceState.FAILED)
            self._retire(r, now, grace=0)

    def _roll_back(self, doc: Doc, old: Doc, why: str) -> None:
        """The new version did not become ready: serve the old one again."""
        new = doc["model"]
        for key in ("model", "tree_id", "command", "health", "memory", "cpus"):
            doc[key] = old.get(key)
        doc["message"] = f"update to {new} rolled back: {why}"
        now = self.clock()
        for r in live(doc):
            if r["model"] != doc["model"]:
                self._retire(r, now, grace=0)

    # --- how many, which version ------------------------------------------------------

    def _reconcile(self, doc: Doc, now: float) -> None:
        idle = doc.get("idle_timeout")
        name = doc["name"]
        if name in self.wanted_now:
            self.wanted_now.discard(name)
            doc["idle"] = False
            self.last_request[name] = now
        if idle and not doc.get("idle") and live(doc) and now - self.last_request.setdefault(
                name, now) >= idle:
            doc["idle"] = True  # scaled to zero until the next request
        wanted = 0 if doc.get("idle") else doc["replicas"]
        replicas = live(doc)
        new = [r for r in replicas if r["model"] == doc["model"]]
        old = [r for r in replicas if r["model"] != doc["model"]]
        if old and wanted:
            late = now - (doc.get("rollout_at") or now) > self.settings.start_timeout
            if late and any(r["state"] != _R for r in new):  # e.g. no GPU beside the old
                why = next((r["message"] for r in new if r.get("message")), "never ready")
                return self._roll_back(doc, old[0], f"its replica was not ready within "
                                                    f"{self.settings.start_timeout:g}s ({why})")
            if len(new) < wanted and all(r["state"] == _R for r in new):
                rules.new_replica(doc)
            ready = sum(1 for r in new if r["state"] == _R)
            for r in old[len(old) - min(len(old), len(new) + len(old) - wanted, ready):]:
                self._retire(r, now)
            return
        for r in old:
            self._retire(r, now)
        while len(new) < wanted:
            new.append(rules.new_replica(doc))
        for r in sorted(new, key=lambda r: r["index"])[wanted:]:
            self._retire(r, now)

    # --- launching --------------------------------------------------------------------

    def _launch(self, name: str, run: int, start: ReplicaStart, now: float) -> None:
        try:
            handle: str | None = self.host.start(start)
            problem, tail, refused = None, "", False
        except Exception as exc:
            log.exception("service %s: a replica could not start", name)
            handle, problem, tail = None, f"could not start: {exc}", self.host.log_tail(start.dir)
            refused = isinstance(exc, ReplicaRefused)  # never runs as asked: no retries
        with self.lock:
            doc = self.records.get(name)
            r = next((x for x in (doc or {}).get("replica_docs", ()) if x["run"] == run), None)
            if doc is not None and r is not None:
                if handle is not None:
                    r["handle"] = handle
                    log.info("service %s replica %s started on GPUs %s (%s)", name,
                             r["index"], r["gpus"], handle)
                elif refused and not r.get("stopping"):
                    self._fail(doc, f"replica {r['index']} {problem}")
                elif not r.get("stopping"):
                    self._died(doc, r, now, problem or "could not start", tail)
                self.records.put(doc)
                handle = None
        if handle is not None:  # its service went meanwhile
            self.host.signal(handle, signal.SIGKILL)

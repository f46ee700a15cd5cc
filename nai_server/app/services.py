"""Use cases of services: a registered model version served by replicas that run as
their owner on the allocator's GPUs (see service_life for how they are kept running).

Who may do what follows the registries (core/service_rules): readers see and invoke,
writers (owner, owning group's members, admins) update, scale and stop. The model
reference is resolved with the caller's own read access, once, and pinned.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from nai_server.app import service_checks as checks
from nai_server.app.accounts import Caller
from nai_server.app.registry import Registry
from nai_server.app.service_life import Endpoint, Supervisor
from nai_server.app.service_stats import RequestBook, service_info
from nai_server.config import ServerConfig
from nai_server.core import service_rules as rules
from nai_server.core.service_rules import live, replica_dir
from nai_server.core.states import SERVICE_TERMINAL, ServiceState
from nai_server.host.gpus import GpuSnapshot
from nai_server.host.replica_http import Answer, ReplicaFailed, ReplicaPool
from nai_server.host.replicas import ReplicaUnreachable
from nai_server.host.runtime import JobRuntime
from nai_server.protocol import Conflict, Forbidden, NotFound, Unavailable
from nai_server.protocol.services import (
    BadGateway,
    ServiceCreate,
    ServiceInfo,
    ServiceList,
    ServiceUpdate,
    TokenCreate,
    TokenInfo,
)
from nai_server.store.atomic import CommitLock
from nai_server.store.blobs import BlobStore
from nai_server.store.db import TinyDbStore
from nai_server.store.service_records import ServiceRecords

Doc = dict[str, Any]
WAIT_STEP = 0.05  # seconds between looks for a ready replica


class Services:
    def __init__(self, config: ServerConfig, store: TinyDbStore, lock: CommitLock,
                 blobs: BlobStore, registry: Registry, runtime: JobRuntime,
                 clock: Callable[[], float]) -> None:
        self.config = config
        self.store = store
        self.lock = lock
        self.blobs = blobs
        self.registry = registry
        self.clock = clock
        self.records = ServiceRecords(store)
        # Replicas as this host's processes, or as Slurm jobs (launcher: slurm).
        self.host = runtime.replica_host(config.state / "services", blobs, config.personal)
        self.life = Supervisor(config, store, self.records, lock, self.host, runtime, clock)
        self.book = RequestBook()
        self.life.outstanding = self.book.outstanding
        self.life.forget = self._forget
        self._turn = 0  # round robin among equally busy replicas
        self.pool = ReplicaPool()  # kept-alive connections to ready replicas (the loop's)
        self._pooled_for: object = None  # the endpoints the pool was last pruned to
        self._admission: dict[str, tuple[object, Doc, list[str]]] = {}
        # A model version a service serves is not removed under it.
        registry.refuse_served = lambda caller, model, numbers: checks.refuse_served(
            self.life.docs(), model, numbers, lambda doc: self._may_read(caller, doc))

    def _forget(self, name: str) -> None:
        self.book.forget(name)
        self._admission.pop(name, None)

    def start(self) -> None:
        self.life.start()

    def close(self) -> None:
        self.life.close()

    # --- access -----------------------------------------------------------------------

    def _owner_groups(self, doc: Doc) -> list[str]:
        user = doc["owner"].get("user")
        return [g["name"] for g in self.store.list_groups() if user in g["members"]]

    def _may_read(self, caller: Caller, doc: Doc) -> bool:
        return rules.may_read(caller, doc, self._owner_groups(doc))

    def _readable(self, caller: Caller, name: str) -> Doc:
        doc = self.records.get(name)
        if doc is None or not self._may_read(caller, doc):
            raise NotFound(f"no service named {name!r} that you may see (see `nai services`)")
        return doc

    def _writable(self, caller: Caller, name: str, verb: str) -> Doc:
        doc = self._readable(caller, name)
        if not rules.may_write(caller, doc):
            raise Forbidden(f"service {name!r} belongs to {rules.owner_label(doc)}; only "
                            f"{rules.writers(doc)} may {verb} it")
        return doc

    # --- views ------------------------------------------------------------------------

    def _info(self, caller: Caller, doc: Doc) -> ServiceInfo:
        return service_info(doc, self.book, self.clock(), rules.may_write(caller, doc))

    def listing(self, caller: Caller) -> ServiceList:
        with self.lock:
            docs = [d for d in self.records.list() if self._may_read(caller, d)]
            return ServiceList(services=[self._info(caller, d) for d in docs])

    def show(self, caller: Caller, name: str) -> ServiceInfo:
        with self.lock:
            return self._info(caller, self._readable(caller, name))

    # --- create, update, stop ---------------------------------------------------------

    def _snapshot(self) -> GpuSnapshot | None:
        """This host's GPUs; None where replicas are placed elsewhere (Slurm's nodes:
        Slurm refuses a request it can never run, with its own words)."""
        if not self.host.places_gpus:
            return None
        return self.life.runtime.state.snapshot or self.life.runtime.gpus.probe()

    def _check_quota(self, user: str, group: str | None, each: int, replicas: int,
                     name: str | None = None) -> None:
        checks.check_replicas(self.config.services, self.life.docs(), user, replicas, name)
        checks.check_quota(self.store, self._snapshot(), user, group, each, replicas)

    def create(self, caller: Caller, body: ServiceCreate) -> ServiceInfo:
        ref = self.registry.resolve(caller, "model", body.model)
        serve = checks.serve_section(self.blobs, ref.tree_id, ref.ref)
        given = body.model_fields_set
        gpus = body.gpus if body.gpus is not None else (serve.gpus or 0)
        memory = checks.gpu_memory(body.gpu_memory, serve, gpus, self._snapshot())
        ram, cpus = checks.limits(self.config.jobs, serve)
        replicas = body.replicas if "replicas" in given or serve.replicas is None \
            else serve.replicas
        now = self.clock()
        with self.lock:
            checks.check_group(self.store, caller, body.group)
            if checks.check_name_free(self.records.get(body.name), body.name):
                self.book.forget(body.name)  # a stopped one's counts
            checks.check_room(self.config.services, self.life.docs(), caller.user)
            self._check_quota(caller.user, body.group, gpus, replicas)
            doc = {
                "name": body.name, "number": self.records.next_number(),
                "owner": {"group": body.group} if body.group else {"user": caller.user},
                "user": caller.user, "model": ref.ref, "tree_id": ref.tree_id,
                "command": serve.command, "health": serve.health, "gpus": gpus,
                "gpu_memory": memory, "memory": ram, "cpus": cpus, "replicas": replicas,
                "visibility": body.visibility, "public": body.public,
                "idle_timeout": body.idle_timeout if "idle_timeout" in given
                else serve.idle_timeout,
                "max_batch": body.max_batch if body.max_batch is not None else serve.max_batch,
                "max_wait_ms": body.max_wait_ms if body.max_wait_ms is not None
                else serve.max_wait_ms,
                "created_at": now, "updated_at": now, "state": str(ServiceState.PENDING),
                "message": None, "runs": 0, "failures": [], "replica_docs": [],
                "tokens": [], "idle": False,
            }
            self.records.put(doc)
            info = self._info(caller, doc)
        self.life.wake()
        return info

    def update(self, caller: Caller, name: str, body: ServiceUpdate) -> ServiceInfo:
        ref = serve = None
        ram: int | None = None
        cpus: float | None = None
        if body.model is not None:
            ref = self.registry.resolve(caller, "model", body.model)
            serve = checks.serve_section(self.blobs, ref.tree_id, ref.ref)
            ram, cpus = checks.limits(self.config.jobs, serve)
        with self.lock:
            doc = self._writable(caller, name, "update")
            if doc["state"] in SERVICE_TERMINAL:
                raise Conflict(f"service {name!r} is {doc['state']}; create it again "
                               f"(`nai serve`) to run it")
            checks.check_session_update(doc, body)
            if ref is not None and serve is not None and ref.ref != doc["model"]:
                # The new version's `serve:` names the command its replicas run, as the
                # service's user: nobody else may choose what runs under that account.
                if caller.user != doc["user"]:
                    raise Forbidden(
                        f"service {name!r} runs as {doc['user']}: only they may change its "
                        f"model; stop it and `nai serve` the version you want as yourself")
                doc.update(model=ref.ref, tree_id=ref.tree_id, command=serve.command,
                           health=serve.health, memory=ram, cpus=cpus, message=None,
                           rollout_at=self.clock())
            if body.replicas is not None:
                self._check_quota(doc["user"], doc["owner"].get("group"), doc["gpus"],
                                  body.replicas, name)
                doc["replicas"] = body.replicas
            if body.visibility is not None:
                doc["visibility"] = body.visibility
            if body.public is not None:
                doc["public"] = body.public
            if body.idle_timeout is not None:
                doc["idle_timeout"] = body.idle_timeout or None
            doc["updated_at"] = self.clock()
            self.records.put(doc)
            info = self._info(caller, doc)
        self.life.wake()
        return info

    def stop(self, caller: Caller, name: str) -> ServiceInfo:
        with self.lock:
            doc = self._writable(caller, name, "stop")
            if doc["state"] not in SERVICE_TERMINAL:
                now = self.clock()
                doc.update(state=str(ServiceState.STOPPED), updated_at=now,
                           message=f"stopped by {caller.user}")
                for r in live(doc):
                    self.life._retire(r, now)
                self.records.put(doc)
            info = self._info(caller, doc)
        self.life.endpoints.pop(name, None)
        self.life.wake()
        return info

    # --- tokens (for the gateway) -----------------------------------------------------

    def create_token(self, caller: Caller, name: str, body: TokenCreate) -> TokenInfo:
        token = "nai_" + secrets.token_urlsafe(32)
        with self.lock:
            doc = self._writable(caller, name, "make tokens for")
            checks.check_session_update(doc, None)
            checks.check_tokens(self.config.services, doc)
            entry: dict[str, Any] = {"id": secrets.token_hex(6), "label": body.label,
                                     "created_at": self.clock(), "hash": _hash(token)}
            doc["tokens"].append(entry)
            self.records.put(doc)
        return TokenInfo(id=entry["id"], label=entry["label"], created_at=entry["created_at"],
                         token=token)

    def list_tokens(self, caller: Caller, name: str) -> list[TokenInfo]:
        with self.lock:
            doc = self._writable(caller, name, "see the tokens of")
        return [TokenInfo(id=t["id"], label=t["label"], created_at=t["created_at"])
                for t in doc["tokens"]]

    def delete_token(self, caller: Caller, name: str, token_id: str) -> None:
        with self.lock:
            doc = self._writable(caller, name, "revoke tokens of")
            kept = [t for t in doc["tokens"] if t["id"] != token_id]
            if len(kept) == len(doc["tokens"]):
                raise NotFound(f"service {name!r} has no token {token_id!r}")
            doc["tokens"] = kept
            self.records.put(doc)

    def gateway_allows(self, name: str, token: str | None) -> bool:
        """Whether the gateway lets a request with this bearer token (or none) through
        to the service: a token of its own, or public where the admin allows it."""
        with self.lock:
            doc = self.records.get(name)
        if doc is None:
            return False
        if doc["public"] and self.config.services.gateway.allow_public:
            return True
        digest = _hash(token) if token else ""
        return bool(token) and any(secrets.compare_digest(t["hash"], digest)
                                   for t in doc["tokens"])

    # --- logs -------------------------------------------------------------------------

    def log_dir(self, caller: Caller, name: str, replica: int) -> Path:
        """The directory of replica `replica`'s current (or last) run. Its log may hold
        what callers sent: only those who may change the service read it."""
        with self.lock:
            doc = self._writable(caller, name, "read the logs of")
        runs = [r for r in doc["replica_docs"] if r["index"] == replica and r["run"]]
        if not runs:
            raise NotFound(f"service {name!r} has no replica {replica} that ran")
        newest = max(runs, key=lambda r: r["run"])
        return self.host.path(replica_dir(doc, newest))

    def log_ended(self, name: str, where: Path) -> bool:
        """Whether the run logging into `where` is over (following stops)."""
        with self.lock:
            doc = self.records.get(name)
        if doc is None:
            return True
        return not any(self.host.path(replica_dir(doc, r)) == where and not r.get("stopping")
                       for r in doc["replica_docs"])

    # --- the proxy ----------------------------------------------------------------------

    def _pick(self, name: str, tried: set[int]) -> list[Endpoint]:
        """Ready replicas not yet tried, least outstanding requests first (ties in turn)."""
        found = [e for e in self.life.endpoints.get(name, ()) if e.index not in tried]
        self._turn += 1
        turn = self._turn
        return sorted(found, key=lambda e: (self.book.outstanding(name, e.index),
                                            (e.index + turn) % max(1, len(found))))

    def admit(self, caller: Caller | None, name: str) -> float:
        """Whether `caller` may invoke the service now (raises if not), and how long to
        wait for a ready replica; a service scaled to zero starts. `caller` None: checked
        already (the gateway's token). Takes the lock: call it from a thread."""
        with self.lock:
            token = self.store.generation()  # before reading: a write meanwhile is newer
            doc = self.records.get(name)
            groups = self._owner_groups(doc) if doc is not None else []
        if doc is not None:
            self._admission[name] = (token, doc, groups)
        return self._decide(caller, name, doc, groups)

    def admitted(self, name: str) -> Doc | None:
        """The document the last admission to `name` decided on (read-only)."""
        seen = self._admission.get(name)
        return seen[1] if seen is not None else None

    def admit_now(self, caller: Caller | None, name: str) -> float | None:
        """`admit` without the lock, from what it read last while the store has not
        changed since (in memory only: the event loop calls it); None: ask `admit`."""
        seen = self._admission.get(name)
        if seen is None or seen[0] != self.store.generation():
            return None
        return self._decide(caller, name, seen[1], seen[2])

    def _decide(self, caller: Caller | None, name: str, doc: Doc | None,
                groups: list[str]) -> float:
        if doc is None or (caller is not None and not rules.may_read(caller, doc, groups)):
            raise NotFound(f"no service named {name!r} that you may see "
                           f"(see `nai services`)")
        if doc["state"] in SERVICE_TERMINAL:
            raise Unavailable(f"service {name!r} is {doc['state']}"
                              + (f": {doc['message']}" if doc.get("message") else ""))
        settings = self.config.services
        self.life.last_request[name] = self.clock()
        if doc["replicas"] == 0:
            raise Unavailable(f"service {name!r} is scaled to 0 replicas (`nai service "
                              f"scale {name} --replicas 1` starts it)")
        if doc.get("idle") or not live(doc):
            self.life.wanted_now.add(name)  # idle, scaled to zero: this request starts it
            self.life.wake()
            return max(settings.invoke_wait, settings.start_timeout)
        return settings.invoke_wait

    async def invoke(self, name: str, wait: float, method: str, target: str,
                     headers: list[tuple[bytes, bytes]], body: bytes) -> Answer:
        """Send one request to a ready replica (after `admit`), waiting up to `wait`
        seconds for one: 503 then, never a hang."""
        self.life.last_request[name] = self.clock()
        deadline = time.monotonic() + wait
        tried: set[int] = set()
        while True:
            self._prune()
            for ep in self._pick(name, tried):
                try:
                    return await self._send(ep, method, target, headers, body)
                except ReplicaUnreachable:
                    tried.add(ep.index)
            if time.monotonic() >= deadline:
                self.book.failed(name, -1, self.clock())
                raise Unavailable(
                    f"service {name!r} has no ready replica after {wait:g}s (see `nai "
                    f"service show {name}`); try again once it is ready")
            tried.clear()
            self.life.last_request[name] = self.clock()  # waiting is use: stay awake
            await asyncio.sleep(WAIT_STEP)

    def _prune(self) -> None:
        """Pooled connections only to the replica runs that are ready now: a replica
        restarted, stopped or unhealthy loses its connections."""
        endpoints = self.life.endpoints  # swapped whole when it changes
        if endpoints is not self._pooled_for:
            self._pooled_for = endpoints
            self.pool.keep(ep for eps in endpoints.values() for ep in eps)

    async def _send(self, ep: Endpoint, method: str, target: str,
                    headers: list[tuple[bytes, bytes]], body: bytes) -> Answer:
        name, index = ep.service, ep.index
        conn = self.pool.checkout(ep, lambda: self.host.connect(ep.dir, ep.owner))
        started = time.monotonic()
        self.book.begin(name, index)
        try:
            answer = await self.pool.exchange(conn, method, target, headers, body,
                                              self.config.services.request_timeout)
        except ReplicaFailed as exc:
            self.book.end(name, index, self.clock(), time.monotonic() - started, True)
            raise BadGateway(f"replica {index} of service {name!r}: {exc}") from exc
        except BaseException:
            self.book.end(name, index, self.clock(), time.monotonic() - started, True)
            raise
        answer.body = self._counted(answer.body, answer.status >= 500, name, index, started)
        return answer

    async def _counted(self, inner: AsyncIterator[bytes], error: bool, name: str, index: int,
                       started: float) -> AsyncIterator[bytes]:
        try:
            async for chunk in inner:
                yield chunk
        except BaseException:
            error = True
            raise
        finally:
            now = self.clock()
            self.life.last_request[name] = now  # idle from the last answer on
            self.book.end(name, index, now, time.monotonic() - started, error)


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()

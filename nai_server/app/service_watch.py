"""What the services' supervisor learns and does outside the store's lock.

Each step first looks, with no lock held: who each service's user is (a user lookup
may go to a directory server), each replica's process (and, for one recorded without
a handle, the wrapper a daemon killed while launching it left), its health path (with
deadlines, in parallel, so no replica holds back the others) and, for one that is not
healthy, the last lines of its log. The decisions are then made under the lock from
what was seen, and what they ask for (signals, directories to remove) is done after
the lock is released, once the decisions are on disk.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from nai_server.config import ServicesConfig
from nai_server.core.service_rules import live, replica_dir
from nai_server.core.states import ServiceState
from nai_server.host.replicas import Owner, ReplicaHost

Doc = dict[str, Any]
Owners = dict[str, Owner | None]


@dataclasses.dataclass(frozen=True)
class Endpoint:
    """A ready replica, for the proxy."""

    service: str
    index: int
    run: int
    dir: Path
    owner: Owner


@dataclasses.dataclass(frozen=True)
class Seen:
    """One replica run as a step saw it before deciding."""

    # Its process: running, exited, vanished; or, on a host that queues replicas
    # (Slurm), queued (`why` says why) or unknown (not asked yet: look again).
    status: str = "vanished"
    healthy: bool = False
    why: str = ""  # why not healthy
    tail: str = ""  # the last lines of its log, when it is not healthy
    # Recorded without a handle: the launch found (replicas.UNKNOWN: not known yet).
    adopted: str | None = None
    code: int | None = None  # the exit status of a process that ended, where known


Observed = dict[str, Seen]  # by replica run (its directory's name)


class Watch:
    """The looking half of a step (see the module's doc)."""

    def __init__(self, host: ReplicaHost, settings: ServicesConfig) -> None:
        self.host = host
        self.settings = settings
        self._pool = ThreadPoolExecutor(8, thread_name_prefix="nai-probe")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def owners(self, docs: Iterable[Doc]) -> Owners:
        return {user: self.host.owner(user) for user in {d["user"] for d in docs}}

    def observe(self, docs: list[Doc], owners: Owners) -> Observed:
        """Replica run (its directory's name) → Seen, for every run launched."""
        work = [(doc, r, owners.get(doc["user"])) for doc in docs
                for r in doc["replica_docs"]
                if r.get("run") and (r.get("handle") or r["state"] != ServiceState.PENDING)]

        def look(item: tuple[Doc, Doc, Owner | None]) -> Seen:
            doc, r, owner = item
            where = self.host.path(replica_dir(doc, r))
            handle = r.get("handle")
            if not handle:  # a launch the daemon died in (see Supervisor._lost)
                return Seen(adopted=self.host.adopt(where, owner) if owner else None)
            status = self.host.status(where, handle)
            if r.get("stopping") or status == "unknown":
                return Seen(status)
            if status == "queued":
                return Seen(status, why=self.host.waiting(handle))
            healthy, why = False, "its process ended"
            if status == "running":
                healthy, why = self.host.probe(
                    where, owner, r["health"], self.settings.probe_timeout) \
                    if owner is not None else (False, f"no unix account {doc['user']}")
            tail = "" if healthy else self.host.log_tail(where)
            code = self.host.exit_code(where, handle) if status == "exited" else None
            return Seen(status, healthy, why, tail, code=code)

        results = list(self._pool.map(look, work))
        return {replica_dir(d, r): seen
                for (d, r, _), seen in zip(work, results, strict=True)}


def endpoints(docs: Iterable[Doc], owners: Owners, host: ReplicaHost,
              terminal: Iterable[str]) -> dict[str, list[Endpoint]]:
    """The ready replicas of each running service, for the proxy (memory only)."""
    ended = set(terminal)
    found: dict[str, list[Endpoint]] = {}
    for doc in docs:
        owner = owners.get(doc["user"])
        if doc["state"] in ended or owner is None:
            continue
        found[doc["name"]] = [
            Endpoint(doc["name"], r["index"], r["run"], host.path(replica_dir(doc, r)), owner)
            for r in live(doc) if r["state"] == ServiceState.READY and r.get("handle")]
    return found


def sweep(host: ReplicaHost, docs: Iterable[Doc]) -> list[str]:
    """Remove the replica directories and cgroups no service document names (those of
    removed services, or left by a daemon killed before it removed them); the names
    of the directories."""
    kept = {replica_dir(d, r) for d in docs for r in d["replica_docs"] if r.get("run")}
    host.sweep_cgroups(kept)
    try:
        names = os.listdir(host.root)
    except OSError:
        return []
    gone = []
    for name in sorted(names):
        run = name[1:-len(".new")] if name.startswith(".") and name.endswith(".new") \
            else name
        number, _, rest = run.partition(".")
        if number.isdigit() and rest.isdigit() and run not in kept:
            host.remove(host.path(name))
            gone.append(name)
    return gone

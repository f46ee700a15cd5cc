"""Services in the daemon's store: one document per service, in the hot database.

A service document holds what its owner asked for, the model version it serves, its
replicas (each with its handle: the pid and start time of its process, or its Slurm
job, so a restarted daemon re-adopts them as it does jobs) and the hashes of its
gateway tokens. Services are few and small, so TinyDB's Table is fast enough. Only
the daemon opens the database; every call is made under the service's lock.
"""

from __future__ import annotations

import copy
from collections.abc import MutableMapping
from typing import Any

from tinydb import Query
from tinydb.table import Document

from nai_server.store.atomic import check_storable
from nai_server.store.db import TinyDbStore

Doc = dict[str, Any]
SEQUENCE = "service_seq"  # the last number given to a service (names its directories)


class ServiceRecords:
    """The `services` table of a TinyDbStore."""

    def __init__(self, store: TinyDbStore) -> None:
        self.store = store
        self.table = store.db.table("services", cache_size=0)

    def get(self, name: str) -> Doc | None:
        """A deep copy (TinyDB's documents share nested lists with its storage)."""
        doc = self.table.get(Query().name == name)
        return _read(doc) if isinstance(doc, Document) else None

    def list(self) -> list[Doc]:
        return sorted((_read(d) for d in self.table.all()), key=lambda d: d["name"])

    def put(self, doc: Doc) -> None:
        """Insert or replace the service named `doc["name"]`, whole."""
        check_storable(doc)
        fresh = copy.deepcopy(doc)
        existing = self.table.get(Query().name == doc["name"])
        if isinstance(existing, Document):
            def replace(stored: MutableMapping[Any, Any]) -> None:
                stored.clear()
                stored.update(fresh)

            self.table.update(replace, doc_ids=[existing.doc_id])
        else:
            self.table.insert(fresh)

    def remove(self, name: str) -> None:
        self.table.remove(Query().name == name)

    def next_number(self) -> int:
        """A number no service had before on this server: names its directories."""
        number = int(self.store.get_setting(SEQUENCE, 0)) + 1
        self.store.set_setting(SEQUENCE, number)
        return number

    def commit(self) -> None:
        self.store.commit()


def _read(stored: MutableMapping[Any, Any]) -> Doc:
    """A copy of a stored service; a replica recorded before handles (its `pid` and
    `pid_start`) reads as one with the local handle "PID:START"."""
    doc = copy.deepcopy(dict(stored))
    for r in doc.get("replica_docs", ()):
        if "handle" not in r:
            pid, start = r.pop("pid", None), r.pop("pid_start", None)
            r["handle"] = f"{pid}:{start if start is not None else -1}" if pid else None
    return doc

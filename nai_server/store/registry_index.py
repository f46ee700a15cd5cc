"""What the registry tables hold, by tree, by name and by creator: the questions asked
per request (may this caller read tree T? how many entries has U made?) answered
without walking, or copying, every entry.

Tree checks run on every request that names a tree the caller has not recorded
(`HEAD /v1/trees/ID`, a job submit, a registry push), under the service lock. Walking
the registry there cost time in proportion to its size (272 ms at 5,000 entries with
deep copies), so one user looping on tree checks could hold the lock most of the time.

The store keeps one index beside its in-memory data and updates it in
`put_registry_entry` and `remove_registry_entry`, the only writers of the registry
tables; it builds a new one when that data was replaced (a rolled-back commit goes back
to what is on disk).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from nai_server.core.registry_rules import pinned_entries

Key = tuple[str, str]  # (kind, name)


def creator(doc: Mapping[str, Any]) -> str | None:
    """Who an entry counts against: the user who created it (a group's entry counts
    against the member who made it); entries older than `created_by` against their
    owner user."""
    made_by = doc.get("created_by") or doc.get("owner", {}).get("user")
    return made_by if isinstance(made_by, str) else None


class RegistryIndex:
    """Entries by tree (every version's, marked for deletion too), their document ids
    in the store's tables, how many each user created, which hold versions marked
    for deletion, and which entries' lineage names versions of which. Built from, and
    valid for, one in-memory data object."""

    def __init__(self, data: dict[str, Any], rollbacks: int) -> None:
        self.data = data
        self.rollbacks = rollbacks
        self.ids: dict[Key, str] = {}
        self.holders: dict[str, set[Key]] = {}
        self._trees: dict[Key, frozenset[str]] = {}
        self._creators: dict[Key, str | None] = {}
        self.created: Counter[str] = Counter()
        self.marked: set[Key] = set()
        # Lineage pins between entries: which entries each one's lineage names, and
        # which name each (what a removal or a collect must read besides the entries
        # it removes from).
        self._pins: dict[Key, frozenset[Key]] = {}
        self.pinned_by: dict[Key, set[Key]] = {}
        for kind in ("dataset", "model"):
            for doc_id, doc in data.get(f"{kind}s", {}).items():
                self.add(kind, doc_id, doc)

    def current(self, data: dict[str, Any] | None, rollbacks: int) -> bool:
        return data is self.data and rollbacks == self.rollbacks

    def add(self, kind: str, doc_id: str, doc: Mapping[str, Any]) -> None:
        """Record entry `doc` (stored under `doc_id`), replacing what was known of it."""
        key = (kind, doc["name"])
        self.drop(kind, doc["name"])
        self.ids[key] = str(doc_id)
        trees = frozenset(v["tree_id"] for v in doc.get("versions", ()) if v.get("tree_id"))
        self._trees[key] = trees
        for tree in trees:
            self.holders.setdefault(tree, set()).add(key)
        made_by = creator(doc)
        self._creators[key] = made_by
        if made_by is not None:
            self.created[made_by] += 1
        if any(v.get("deleted") for v in doc.get("versions", ())):
            self.marked.add(key)
        pins = _pins_of(doc)
        self._pins[key] = pins
        for pinned in pins:
            self.pinned_by.setdefault(pinned, set()).add(key)

    def drop(self, kind: str, name: str) -> None:
        """Forget entry (kind, name), if known."""
        key = (kind, name)
        if self.ids.pop(key, None) is None:
            return
        _unlink(self.holders, self._trees.pop(key, frozenset()), key)
        made_by = self._creators.pop(key, None)
        if made_by is not None:
            self.created[made_by] -= 1
            if self.created[made_by] <= 0:
                del self.created[made_by]
        self.marked.discard(key)
        _unlink(self.pinned_by, self._pins.pop(key, frozenset()), key)

    def with_pinners(self, keys: Iterable[Key]) -> list[Key]:
        """Entries `keys` that exist and every entry whose lineage names a version of
        one of them, in listing order (datasets, then models, each by name)."""
        out = {key for key in keys if key in self.ids}
        for key in list(out):
            out |= self.pinned_by.get(key, set())
        return sorted(out, key=lambda k: (k[0] != "dataset", k[1]))


def _pins_of(doc: Mapping[str, Any]) -> frozenset[Key]:
    """The entries `doc`'s lineage names; none for a malformed document (building the
    index must not fail; a removal that reads it fails on it as it always did)."""
    try:
        return frozenset(pinned_entries(doc))
    except (AttributeError, TypeError, KeyError):
        return frozenset()


def _unlink(sets: dict[Any, set[Key]], at: Iterable[Any], key: Key) -> None:
    """Take ``key`` out of ``sets[k]`` for each k of ``at``, dropping sets left empty."""
    for k in at:
        found = sets.get(k)
        if found is not None:
            found.discard(key)
            if not found:
                del sets[k]

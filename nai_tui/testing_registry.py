"""The fake server's datasets and models (see `nai_tui.testing.FakeServerClient`).
Everyone reads everything here: the fake does not model sharing."""

from __future__ import annotations

from typing import Any

from nai_server.protocol import (
    Conflict,
    Invalid,
    NotFound,
    PushedVersion,
    RegistryEntry,
    RegistrySummary,
    RegistryVersion,
)
from nai_tui.testing_base import FakeServerBase


class FakeRegistries(FakeServerBase):
    """The registries' calls, and the scene-setting that adds a version."""

    def add_registry_version(self, kind: str, name: str, files: dict[str, bytes], *,
                             tag: str | None = None, description: str = "",
                             used_by: list[int] | None = None, deleted: bool = False,
                             created_by: str | None = None, shared: bool = False,
                             group: str | None = None) -> RegistryVersion:
        """Add a version (and the dataset or model, when new) made of these files."""
        tree = self.add_tree(files)
        with self._lock:
            version = self._new_version(kind, name, tree.id, created_by or self.user,
                                        description, tag, {}, group=group, shared=shared)
            if used_by or deleted:
                version = version.model_copy(update={"used_by": list(used_by or []),
                                                     "deleted": deleted})
                self._put_version(kind, name, version)
            return version

    def _new_version(self, kind: str, name: str, tree_id: str, by: str, description: str,
                     tag: str | None, metadata: dict[str, Any], *, group: str | None = None,
                     shared: bool = False) -> RegistryVersion:
        """Append a version (creating the entry when new); the caller holds the lock."""
        entry = self._registries.get((kind, name))
        if entry is None:
            entry = RegistryEntry(kind=kind, name=name,  # type: ignore[arg-type]
                                  owner={"group": group} if group else {"user": by},
                                  visibility="shared" if shared else "private",
                                  shared_with_groups=[], description=description,
                                  created_at=self.now, latest=None, versions=[],
                                  may_write=True)
        tree = self.trees.get(tree_id)
        number = max((v.version for v in entry.versions), default=0) + 1
        versions = [v.model_copy(update={"tag": None}) if tag and v.tag == tag else v
                    for v in entry.versions]
        version = RegistryVersion(version=number, tag=tag, tree_id=tree_id,
                                  size=tree.size if tree else 0,
                                  files=tree.files if tree else 0, created_at=self.now,
                                  created_by=by, description=description, metadata=metadata)
        self._registries[(kind, name)] = entry.model_copy(
            update={"versions": [*versions, version], "latest": number})
        return version

    def _put_version(self, kind: str, name: str, version: RegistryVersion) -> None:
        entry = self._registries[(kind, name)]
        versions = [version if v.version == version.version else v for v in entry.versions]
        live = [v.version for v in versions if not v.deleted]
        self._registries[(kind, name)] = entry.model_copy(
            update={"versions": versions, "latest": max(live, default=None)})

    def _entry(self, kind: str, name: str) -> RegistryEntry:
        if kind not in ("dataset", "model"):
            raise ValueError(f"kind: 'dataset' or 'model', not {kind!r}")
        with self._lock:
            entry = self._registries.get((kind, name))
        if entry is None:
            raise NotFound(f"no {kind} {name!r}: `nai {kind} list` shows those you may read")
        return entry

    def registry_list(self, kind: str) -> list[RegistrySummary]:
        def listing() -> list[RegistrySummary]:
            with self._lock:
                entries = sorted((e for (k, _), e in self._registries.items() if k == kind),
                                 key=lambda e: e.name)
            out = []
            for e in entries:
                latest = next((v for v in e.versions if v.version == e.latest), None)
                out.append(RegistrySummary(
                    kind=e.kind, name=e.name, owner=e.owner, visibility=e.visibility,
                    shared_with_groups=e.shared_with_groups, description=e.description,
                    created_at=e.created_at, latest=e.latest,
                    latest_tag=latest.tag if latest else None,
                    size=latest.size if latest else 0, files=latest.files if latest else 0,
                    versions=sum(not v.deleted for v in e.versions), may_write=e.may_write))
            return out
        return self._do("registry_list", listing)

    def registry_entry(self, kind: str, name: str) -> RegistryEntry:
        return self._do("registry_entry", self._entry, kind, name)

    def registry_create(self, kind: str, name: str, tree_id: str, *, group: str | None = None,
                        shared: bool = False, description: str = "", tag: str | None = None,
                        metadata: dict[str, Any] | None = None) -> RegistryEntry:
        def create() -> RegistryEntry:
            with self._lock:
                if (kind, name) in self._registries:
                    raise Conflict(f"{kind} {name!r} exists: push a new version instead")
                self._new_version(kind, name, tree_id, self.user, description, tag,
                                  metadata or {}, group=group, shared=shared)
            return self._entry(kind, name)
        return self._do("registry_create", create)

    def registry_push(self, kind: str, name: str, tree_id: str, *, description: str = "",
                      tag: str | None = None, metadata: dict[str, Any] | None = None,
                      allow_same: bool = False) -> PushedVersion:
        def push() -> PushedVersion:
            entry = self._entry(kind, name)
            live = [v for v in entry.versions if not v.deleted]
            if live and live[-1].tree_id == tree_id and not allow_same:  # as the server
                return PushedVersion(**live[-1].model_dump(), unchanged=True)
            with self._lock:
                made = self._new_version(kind, name, tree_id, self.user, description, tag,
                                         metadata or {})
            return PushedVersion(**made.model_dump())
        return self._do("registry_push", push)

    def registry_version(self, kind: str, name: str, ref: str = "latest") -> RegistryVersion:
        def version() -> RegistryVersion:
            entry = self._entry(kind, name)
            for v in entry.versions:
                if (ref == "latest" and v.version == entry.latest) or ref in (str(v.version),
                                                                              v.tag):
                    return v
            if ref == "latest":
                raise Invalid(f"{kind} {name} has no live version")
            raise NotFound(f"{kind} {name} has no version {ref!r}")
        return self._do("registry_version", version)

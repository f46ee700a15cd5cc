"""Registries of datasets and models: versioned trees owned by a user or a group.

Use cases behind `/v1/datasets` and `/v1/models`: create, push a version, list, show,
remove, share, tag; `resolve` and `record_use` for jobs that mount a version. The
decisions (who may read or write, which version a reference names, what a removal
must keep) are pure functions in `nai_server.core.registry_rules`.

Refusals do not leak: an entry the caller may not read answers 404 as if absent; a
readable one the caller may not change answers 403 naming who may. A version is made
only of a tree the caller may read (`may_read_tree`, set by the service): a tree id
seen somewhere is not enough. Reading a model shows the code tree its lineage names
only to those who may read that tree.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from nai_server.app.accounts import Caller
from nai_server.config import RegistryConfig
from nai_server.core import registry_rules as rules
from nai_server.core.registry_rules import Kind, RefError
from nai_server.core.trees import Entry as TreeEntry
from nai_server.protocol import (
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    PushedVersion,
    RegistryCreate,
    RegistryEntry,
    RegistrySummary,
    RegistryVersion,
    RemovalResult,
    VersionCreate,
)
from nai_server.store.atomic import CommitLock
from nai_server.store.blobs import StoreCorrupt, TreeNotFound
from nai_server.store.db import TinyDbStore

Doc = dict[str, Any]
MAX_METADATA_BYTES = 64 * 1024  # metadata lives in the hot database: keep it small
_VERBS = {"push": "push versions of", "share": "change who may read",
          "tag": "tag versions of", "remove": "remove"}


class TreeReader(Protocol):
    """Where the registry finds a version's files (the blob store)."""

    def get_tree(self, tree_id: str) -> tuple[TreeEntry, ...]: ...

    def has_tree(self, tree_id: str) -> bool: ...


@dataclass(frozen=True)
class ResolvedRef:
    """A readable version, pinned: what a job mounts."""

    kind: Kind
    name: str
    version: int
    tree_id: str

    @property
    def ref(self) -> str:
        return rules.format_ref(self.name, self.version)


class Registry:
    """Datasets and models in the store; every method takes the service lock."""

    def __init__(self, store: TinyDbStore, lock: CommitLock, trees: TreeReader,
                 clock: Callable[[], float], bounds: RegistryConfig | None = None) -> None:
        self.store = store
        self.bounds = bounds or RegistryConfig()
        self.lock = lock
        self.trees = trees
        self.clock = clock
        # Whether a caller may read a tree (nai_server.app.tree_access); the service sets it.
        self.may_read_tree: Callable[[Caller, str], bool] = lambda caller, tree_id: True
        # Conflict while a service serves one of a model's versions (app/services sets it).
        self.refuse_served: Callable[[Caller, str, list[int]], None] = (
            lambda caller, name, numbers: None)
        # ... and while an annotate session shows one of a dataset's (app/annotator_services).
        self.refuse_annotated: Callable[[Caller, str, list[int]], None] = (
            lambda caller, name, numbers: None)

    # --- lookups ----------------------------------------------------------------------

    def _readable(self, caller: Caller, kind: Kind, name: str) -> Doc:
        doc = self.store.get_registry_entry(kind, name)
        if doc is None or not rules.may_read(caller, doc):
            raise NotFound(f"no {kind} named {name!r} that you may read (see `nai {kind} list`)")
        return doc

    def _writable(self, caller: Caller, kind: Kind, name: str, action: str) -> Doc:
        doc = self._readable(caller, kind, name)
        if not rules.may_write(caller, doc):
            raise Forbidden(
                f"{kind} {name!r} belongs to {rules.owner_label(doc)}; only "
                f"{rules.writers(doc)} may {_VERBS[action]} it")
        return doc

    @staticmethod
    def _version(doc: Doc, selector: str, *, deleted: bool = False) -> Doc:
        found = rules.find_version(doc, selector, deleted=deleted)
        if found is None:
            kind, name = doc["kind"], doc["name"]
            marked = rules.find_version(doc, selector, deleted=True)
            if marked is not None:
                raise NotFound(f"{kind} {name}@{selector} was removed; it is kept only while "
                               f"something still uses it")
            numbers = [str(v["version"]) for v in doc["versions"] if not v.get("deleted")]
            known = f"versions: {', '.join(numbers)}" if numbers else "no live versions"
            raise NotFound(f"{kind} {name!r} has no version {selector!r} ({known}; see "
                           f"`nai {kind} show {name}`)")
        return dict(found)

    @staticmethod
    def _parse(kind: Kind, ref: str) -> tuple[str, str]:
        try:
            return rules.parse_ref(ref, kind)
        except RefError as exc:
            raise Invalid(str(exc)) from exc

    # --- views ------------------------------------------------------------------------

    def _version_info(self, caller: Caller, v: Doc,
                      memo: dict[str, bool] | None = None) -> RegistryVersion:
        code = rules.lineage_code_tree(v)
        if code is not None:
            memo = {} if memo is None else memo
            if code not in memo:
                memo[code] = self.may_read_tree(caller, code)
            if not memo[code]:
                v = rules.hide_lineage_code(v)
        return RegistryVersion(**{k: v[k] for k in RegistryVersion.model_fields if k in v})

    def _entry_info(self, caller: Caller, doc: Doc) -> RegistryEntry:
        newest = rules.latest(doc)
        memo: dict[str, bool] = {}  # versions of one job's code: one look
        return RegistryEntry(
            kind=doc["kind"], name=doc["name"], owner=doc["owner"],
            visibility=doc["visibility"], shared_with_groups=doc["shared_with_groups"],
            description=doc["description"], created_at=doc["created_at"],
            latest=newest["version"] if newest else None,
            versions=[self._version_info(caller, v, memo) for v in doc["versions"]],
            may_write=rules.may_write(caller, doc))

    @staticmethod
    def _summary(caller: Caller, doc: Mapping[str, Any]) -> RegistrySummary:
        newest = rules.latest(doc)
        return RegistrySummary(
            kind=doc["kind"], name=doc["name"], owner=doc["owner"],
            visibility=doc["visibility"], shared_with_groups=doc["shared_with_groups"],
            description=doc["description"], created_at=doc["created_at"],
            latest=newest["version"] if newest else None,
            latest_tag=newest.get("tag") if newest else None,
            size=newest["size"] if newest else 0, files=newest["files"] if newest else 0,
            versions=sum(1 for v in doc["versions"] if not v.get("deleted")),
            may_write=rules.may_write(caller, doc), metric=_chosen_metric(newest))

    def list_entries(self, caller: Caller, kind: Kind) -> list[RegistrySummary]:
        """Every entry of `kind` the caller may read, by name. Summaries are made from
        the stored entries under the lock: cheaper than copying every entry first."""
        with self.lock:
            return [self._summary(caller, d)
                    for d in self.store.stored_registry_entries(kind) if rules.may_read(caller, d)]

    def show(self, caller: Caller, kind: Kind, name: str) -> RegistryEntry:
        with self.lock:
            return self._entry_info(caller, self._readable(caller, kind, name))

    def version(self, caller: Caller, kind: Kind, name: str, selector: str) -> RegistryVersion:
        """One version (a number also finds one marked for deletion)."""
        with self.lock:
            doc = self._readable(caller, kind, name)
            return self._version_info(caller, self._version(doc, selector, deleted=True))

    # --- for jobs (part 2 of the registries) ------------------------------------------

    def resolve(self, caller: Caller, kind: Kind, ref: str) -> ResolvedRef:
        """`name[@version|@tag|@latest]` → the exact version the caller may read.
        Versions marked for deletion are not handed out again."""
        name, selector = self._parse(kind, ref)
        with self.lock:
            v = self._version(self._readable(caller, kind, name), selector)
            # Marked as just used: a job about to name it must not see it go if the
            # version is removed and `nai-admin store gc` runs before the job is stored.
            self.trees.has_tree(v["tree_id"])
        return ResolvedRef(kind, name, v["version"], v["tree_id"])

    def record_use(self, kind: Kind, name: str, version: int, job_id: int) -> None:
        """Note that job `job_id` uses this version: `show` lists it, and a removal keeps
        the version while the job has not finished. No access check: call it after
        `resolve` for the job's owner."""
        with self.lock:
            doc = self.store.get_registry_entry(kind, name)
            found = next((v for v in doc["versions"] if v["version"] == version),
                         None) if doc else None
            if doc is None or found is None:
                raise NotFound(f"no {kind} {rules.format_ref(name, version)}")
            if job_id not in found["used_by"]:
                found["used_by"].append(job_id)
                self.store.put_registry_entry(kind, doc)

    def register_output(self, caller: Caller, name: str, tree_id: str, *,
                        group: str | None, description: str,
                        metadata: dict[str, Any], kind: Kind = "model",
                        tag: str | None = None) -> RegistryVersion:
        """A job's outputs as the next version of model (or dataset) `name`, created
        (owned by the caller, or by `group`) when it does not exist yet. Same checks as
        a push, but for the tree: made from a job the caller may read (at its end by the
        runtime, or later by `JobModels`, which checked)."""
        # A job's outputs are always a new version, even when they equal the latest:
        # the version carries that job's lineage.
        body = VersionCreate(tree_id=tree_id, description=description, metadata=metadata,
                             allow_same=True, tag=tag)
        with self.lock:
            if self.store.get_registry_entry(kind, name) is not None:
                return self.push(caller, kind, name, body, own_tree=True)
            entry = self.create(caller, kind, RegistryCreate(
                name=name, group=group, **body.model_dump()), own_tree=True)
            return entry.versions[-1]

    # --- changes ----------------------------------------------------------------------

    def _tree_stats(self, caller: Caller, tree_id: str, own_tree: bool) -> tuple[int, int]:
        """Files and bytes of a tree the caller may read; the same refusal for one they
        may not read as for one the server does not have."""
        try:
            if not own_tree and not self.may_read_tree(caller, tree_id):
                raise TreeNotFound(tree_id)
            entries = self.trees.get_tree(tree_id)
        except (TreeNotFound, ValueError, StoreCorrupt) as exc:
            raise Invalid(f"no tree {tree_id!r} on this server: upload the folder first "
                          f"(`nai dataset push` and `nai model push` do both)") from exc
        return (sum(1 for e in entries if e.kind == "file"), sum(e.size for e in entries))

    def _metadata(self, caller: Caller, metadata: dict[str, Any],
                  made: bool = False) -> dict[str, Any]:
        """Metadata as stored: size-capped, with lineage references pinned to versions;
        the server's own keys only in what it `made` (a job's outputs)."""
        if not made:
            try:
                rules.check_user_metadata(metadata)
            except RefError as exc:
                raise Invalid(str(exc)) from exc
        if len(orjson.dumps(metadata)) > MAX_METADATA_BYTES:
            raise Invalid(f"metadata is larger than {MAX_METADATA_BYTES // 1024} KiB; keep "
                          f"large files (curves, samples) in the version's tree")
        lineage = metadata.get("lineage")
        if lineage is None:
            return metadata
        if not isinstance(lineage, dict):
            raise Invalid("metadata.lineage must be an object, e.g. "
                          '{"datasets": ["cifar10@2"], "models": ["resnet@1"], "job": 12}')
        try:
            refs = rules.lineage_refs(lineage)
        except RefError as exc:
            raise Invalid(f"metadata.{exc}") from exc
        pinned = {k: v for k, v in lineage.items() if k not in ("dataset", "model")}
        for key, wanted in refs.items():
            kind = rules.LINEAGE_KEYS[key]
            try:
                pinned[key] = [self.resolve(caller, kind, ref).ref for ref in wanted]
            except (NotFound, Invalid) as exc:
                raise Invalid(f"metadata.lineage.{key}: {exc.message}") from exc
        return {**metadata, "lineage": pinned}

    def _check_versions_room(self, doc: Doc) -> None:
        """An entry holds at most `registry.max_versions_per_entry` versions (those
        marked for deletion count until they go: they are still stored)."""
        most, held = self.bounds.max_versions_per_entry, len(doc["versions"])
        if most is None or held < most:
            return
        kind, name = doc["kind"], doc["name"]
        raise Conflict(
            f"{kind} {name!r} holds {held} versions, the most this server allows "
            f"(registry.max_versions_per_entry: {most}); remove versions you no longer "
            f"need (`nai {kind} rm {name}@VERSION`; one still in use is kept until it is "
            f"not), push to a new {kind}, or ask an admin to raise the limit")

    def _check_entries_room(self, caller: Caller) -> None:
        """A user creates at most `registry.max_entries_per_user` datasets and models
        together; entries owned by a group count against the member who created them."""
        most = self.bounds.max_entries_per_user
        made = self.store.registry_entries_created_by(caller.user)
        if most is None or made < most:
            return
        raise Conflict(
            f"{caller.user} has created {made} datasets and models, the most this server "
            f"allows (registry.max_entries_per_user: {most}); remove ones you no longer "
            f"need (`nai dataset rm NAME`, `nai model rm NAME`; `nai dataset list` and "
            f"`nai model list` show them; one still in use is kept until it is not), or "
            f"ask an admin to raise the limit")

    def _new_version(self, caller: Caller, doc: Doc, body: VersionCreate,
                     own_tree: bool = False) -> Doc:
        self._check_versions_room(doc)
        files, size = self._tree_stats(caller, body.tree_id, own_tree)
        number = doc["next_version"]
        if body.tag is not None:
            self._free_tag(doc, body.tag)
        v = {"version": number, "tag": body.tag, "tree_id": body.tree_id, "size": size,
             "files": files, "created_at": self.clock(), "created_by": caller.user,
             "description": body.description,
             "metadata": self._metadata(caller, body.metadata, made=own_tree),
             "deleted": False,
             "used_by": []}
        doc["versions"].append(v)
        doc["next_version"] = number + 1
        return v

    @staticmethod
    def _free_tag(doc: Doc, tag: str) -> None:
        for v in doc["versions"]:
            if v.get("tag") == tag:
                v["tag"] = None

    def create(self, caller: Caller, kind: Kind, body: RegistryCreate, *,
               own_tree: bool = False) -> RegistryEntry:
        """A new entry with its version 1, owned by the caller or by `body.group`.
        `own_tree`: the tree is known to be the caller's (a job's outputs)."""
        owner: dict[str, str] = {"user": caller.user}
        with self.lock:
            if body.group is not None:
                if body.group not in caller.groups and not caller.admin:
                    raise Forbidden(
                        f"{caller.user} is not a member of group {body.group!r}; only its "
                        f"members and admins may create {kind}s it owns")
                if self.store.get_group(body.group) is None:
                    raise Invalid(f"no group named {body.group!r} (`nai whoami` lists yours)")
                owner = {"group": body.group}
            existing = self.store.get_registry_entry(kind, body.name)
            if existing is not None:
                hint = (f"; push a new version with `nai {kind} push {body.name} DIR`"
                        if rules.may_write(caller, existing) else "; choose another name")
                raise Conflict(f"a {kind} named {body.name!r} already exists{hint}")
            self._check_entries_room(caller)
            doc: Doc = {
                "kind": kind, "name": body.name, "owner": owner,
                "visibility": "shared" if body.shared else "private",
                "shared_with_groups": [], "description": body.description,
                "created_at": self.clock(), "created_by": caller.user, "next_version": 1,
                "versions": []}
            self._new_version(caller, doc, body, own_tree)
            self.store.put_registry_entry(kind, doc)
            return self._entry_info(caller, doc)

    def push(self, caller: Caller, kind: Kind, name: str, body: VersionCreate, *,
             own_tree: bool = False) -> PushedVersion:
        """A new version of an existing entry (numbered after every earlier one); or,
        when the tree is the one the latest version holds and `body.allow_same` is not
        set, nothing new: that version, marked `unchanged`."""
        with self.lock:
            doc = self._writable(caller, kind, name, "push")
            same = None if body.allow_same else rules.unchanged_by(doc, body.tree_id)
            if same is not None:
                return PushedVersion(**self._version_info(caller, dict(same)).model_dump(),
                                     unchanged=True)
            v = self._new_version(caller, doc, body, own_tree)
            self.store.put_registry_entry(kind, doc)
            return PushedVersion(**self._version_info(caller, v).model_dump())

    def set_tag(self, caller: Caller, kind: Kind, name: str, selector: str,
                tag: str | None) -> RegistryVersion:
        """Put `tag` on a version, moving it from any other; None clears the version's."""
        if tag is not None:
            try:
                rules.check_tag(tag)
            except RefError as exc:
                raise Invalid(str(exc)) from exc
        with self.lock:
            doc = self._writable(caller, kind, name, "tag")
            number = self._version(doc, selector)["version"]
            if tag is not None:
                self._free_tag(doc, tag)
            v = next(v for v in doc["versions"] if v["version"] == number)
            v["tag"] = tag
            self.store.put_registry_entry(kind, doc)
            return self._version_info(caller, v)

    def set_sharing(self, caller: Caller, kind: Kind, name: str, *, shared: bool,
                    groups: Sequence[str]) -> RegistryEntry:
        """Who besides the owners may read: everyone (`shared`) and/or `groups`."""
        with self.lock:
            doc = self._writable(caller, kind, name, "share")
            unknown = [g for g in groups if self.store.get_group(g) is None]
            if unknown:
                raise Invalid(f"no group named {unknown[0]!r}; share with existing groups "
                              f"(an admin adds them: nai-admin group add NAME)")
            doc["visibility"] = "shared" if shared else "private"
            doc["shared_with_groups"] = sorted(set(groups))
            self.store.put_registry_entry(kind, doc)
            return self._entry_info(caller, doc)

    # --- removal ----------------------------------------------------------------------

    def _active_jobs(self) -> set[int]:
        return {j.id for j in self.store.hot() if not j.terminal}

    def remove(self, caller: Caller, kind: Kind, name: str,
               selector: str | None = None) -> RemovalResult:
        """Remove one version (`selector`) or the whole entry. A version an unfinished
        job uses, or another version's lineage names, is kept and marked for deletion;
        it goes once nothing needs it (see `collect`)."""
        with self.lock:
            doc = self._writable(caller, kind, name, "remove")
            if selector is None:
                numbers = [v["version"] for v in doc["versions"]]
            else:
                numbers = [self._version(doc, selector, deleted=True)["version"]]
            if kind == "model":
                self.refuse_served(caller, name, numbers)
            else:
                self.refuse_annotated(caller, name, numbers)
            # Only this entry and those whose lineage names its versions can decide:
            # read from the store's index, not a walk over every entry (this runs
            # under the lock, and a user may loop on create and remove).
            plan = rules.plan_removal(self.store.stored_registry_entries_pinning([(kind, name)]),
                                      kind, name, numbers, self._active_jobs())
            if plan.entry_removed:
                self.store.remove_registry_entry(kind, name)
            else:
                self.store.put_registry_entry(kind, rules.apply_removal(doc, plan))
            self.collect()
        return RemovalResult(kind=kind, name=name, removed=list(plan.removed),
                             kept=plan.kept, entry_removed=plan.entry_removed,
                             message=self._removal_message(kind, name, plan))

    @staticmethod
    def _removal_message(kind: str, name: str, plan: rules.Removal) -> str:
        parts = []
        if plan.removed:
            parts.append(f"removed {kind} {name} version(s) "
                         f"{', '.join(map(str, plan.removed))}")
        for number, reasons in sorted(plan.kept.items()):
            parts.append(f"kept {kind} {name}@{number}, marked for deletion: {'; '.join(reasons)}")
        if plan.entry_removed:
            parts.append(f"{kind} {name} is gone")
        return ". ".join(parts)

    def collect(self) -> int:
        """Drop versions marked for deletion that nothing needs any more (and entries
        left without versions); returns how many versions went. The job runtime calls
        this when jobs end; removals call it too."""
        dropped = 0
        with self.lock:
            while True:  # dropping a version can free what its lineage named
                if not self.store.registry_has_marked():  # the common case: cheap
                    return dropped
                # The entries holding marked versions and those that pin them: one
                # version kept marked (a queued job uses it) must not make every job's
                # end walk the whole registry. Stored documents, read only; an entry
                # that changes is written as a new document.
                entries = self.store.stored_registry_entries_pinning(
                    self.store.registry_marked())
                due = rules.collectable(entries, self._active_jobs())
                if not due:
                    return dropped
                for stored in entries:
                    numbers = due.get((stored["kind"], stored["name"]))
                    if not numbers:
                        continue
                    dropped += len(numbers)
                    doc = {**stored, "versions": [v for v in stored["versions"]
                                                  if v["version"] not in numbers]}
                    if doc["versions"]:
                        self.store.put_registry_entry(doc["kind"], doc)
                    else:
                        self.store.remove_registry_entry(doc["kind"], doc["name"])


def _chosen_metric(version: Mapping[str, Any] | None) -> dict[str, Any] | None:
    metric = (version or {}).get("metadata", {}).get("metric")
    return metric if isinstance(metric, dict) else None

"""The registries' decisions as pure functions over plain data (DESIGN §3, §6).

An entry (a dataset or a model) is a dict as the store keeps it: `kind`, `name`,
`owner` ({"user": U} or {"group": G}), `visibility` ("private" | "shared"),
`shared_with_groups`, `versions` (dicts with `version`, `tag`, `tree_id`, `deleted`,
`used_by`, `metadata`...). Who may read or write it, which version a reference
names, and which versions must outlive a removal are decided here; the use cases in
`nai_server.app.registry` only load, call these, and store.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from nai_server.core.bounds import shown

Kind = Literal["dataset", "model"]
KINDS: tuple[Kind, ...] = ("dataset", "model")
LATEST = "latest"

NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# A tag starts with a letter so that it never reads as a version number.
TAG_RE = re.compile(r"[A-Za-z][A-Za-z0-9._-]{0,63}")
# Lineage keys that name registry versions, and the kind each names.
LINEAGE_KEYS: dict[str, Kind] = {"datasets": "dataset", "models": "model"}
_LINEAGE_ALIASES = {"dataset": "datasets", "model": "models"}

Entry = Mapping[str, Any]
Version = Mapping[str, Any]
Pin = tuple[str, str, int]  # (kind, name, version)


class RefError(ValueError):
    """A reference or a name that cannot name anything; the message says why."""


class Principal(Protocol):
    """Who is asking: what the access rules look at (the server's `Caller` fits)."""

    @property
    def user(self) -> str: ...

    @property
    def admin(self) -> bool: ...

    @property
    def groups(self) -> tuple[str, ...]: ...


# --- names and references -------------------------------------------------------------


def check_name(name: str, kind: str = "dataset") -> str:
    if not NAME_RE.fullmatch(name):
        raise RefError(f"{kind} names are 1-64 letters, digits, '.', '_' or '-', starting "
                       f"with a letter or digit; {shown(name)} is not one")
    return name


def check_tag(tag: str) -> str:
    if not TAG_RE.fullmatch(tag) or tag == LATEST:
        raise RefError(f"tags are 1-64 letters, digits, '.', '_' or '-' starting with a letter, "
                       f"and not {LATEST!r}; {shown(tag)} is not one")
    return tag


def parse_ref(ref: str, kind: str = "dataset") -> tuple[str, str]:
    """`name[@version|@tag|@latest]` → (name, selector); the selector defaults to latest."""
    name, at, selector = ref.partition("@")
    check_name(name, kind)
    if at and not selector:
        raise RefError(f"{ref!r}: nothing after '@'; write {name}@3, {name}@TAG or {name}")
    return name, selector or LATEST


def format_ref(name: str, version: int) -> str:
    return f"{name}@{version}"


# Metadata only the server writes (app.finetune_origin, on a version made by fine-tuning):
# `finetune_code` names the version whose files `nai finetune` runs, so a user setting
# it on their own version could have whoever fine-tunes it run another's model's files.
SERVER_METADATA = ("finetune_code",)


def check_user_metadata(metadata: Mapping[str, Any]) -> None:
    """Refuse what a client may not set in a version's metadata (RefError)."""
    for key in SERVER_METADATA:
        if key in metadata:
            raise RefError(
                f"metadata.{key} is set by the server only, on a version made by "
                f"`nai finetune`; remove it (to make a version fine-tunable, push it "
                f"with the code that trains it and a finetune_command)")


def finetune_code(base: Version | None, name: str) -> str | None:
    """The version whose files hold the code that fine-tunes `base` (model `name`): the
    one its metadata names (`finetune_code`, a version made by fine-tuning), else itself."""
    if base is None:
        return None
    held = (base.get("metadata") or {}).get("finetune_code")
    if isinstance(held, str) and re.fullmatch(r"[^@/]{1,64}@\d{1,16}", held):
        return held
    return format_ref(name, base["version"])


def find_version(entry: Entry, selector: str, *, deleted: bool = False) -> Version | None:
    """The version `selector` names: `latest` (newest not removed), a number, or a tag.
    Versions marked for deletion are found by number only when `deleted` is true."""
    live = [v for v in entry["versions"] if not v.get("deleted")]
    if selector == LATEST:
        return max(live, key=lambda v: v["version"], default=None)
    if selector.isascii() and selector.isdigit():
        if len(selector) > 16:  # beyond any version number (and int()'s digit limit)
            return None
        number = int(selector)
        pool = entry["versions"] if deleted else live
        return next((v for v in pool if v["version"] == number), None)
    return next((v for v in live if v.get("tag") == selector), None)


def latest(entry: Entry) -> Version | None:
    return find_version(entry, LATEST)


def unchanged_by(entry: Entry, tree_id: str) -> Version | None:
    """The latest version if it already holds `tree_id`: pushing that tree again would
    record nothing new (trees are content-addressed, so the same id is the same files,
    modes and links). Older versions do not count: going back to them is a change."""
    newest = latest(entry)
    return newest if newest is not None and newest["tree_id"] == tree_id else None


# --- access ---------------------------------------------------------------------------


def owner_label(entry: Entry) -> str:
    owner = entry["owner"]
    return f"group {owner['group']}" if "group" in owner else f"user {owner['user']}"


def may_write(who: Principal, entry: Entry) -> bool:
    """Push versions, share, tag, remove: the owner user, members of the owning group,
    admins."""
    owner = entry["owner"]
    return (who.admin or owner.get("user") == who.user
            or ("group" in owner and owner["group"] in who.groups))


def may_read(who: Principal, entry: Entry) -> bool:
    """Writers, members of a group it is shared with, and everyone when shared."""
    return (entry.get("visibility") == "shared" or may_write(who, entry)
            or any(g in who.groups for g in entry.get("shared_with_groups", ())))


def reads_tree(who: Principal, entry: Entry, tree_id: str) -> bool:
    """True if `who` may read the tree `tree_id` through this entry: one of its versions
    (marked for deletion too) is that tree and `who` may read the entry. A tree named
    only in a version's metadata (a lineage's code tree) is not reached this way."""
    return may_read(who, entry) and any(v.get("tree_id") == tree_id
                                        for v in entry["versions"])


def hide_lineage_code(version: Mapping[str, Any]) -> dict[str, Any]:
    """The version with `metadata.lineage.code_tree` cleared: sharing a model shares its
    files, not the code of the job that made it (see `Registry` for who still sees it)."""
    metadata = version.get("metadata") or {}
    lineage = metadata.get("lineage")
    if not isinstance(lineage, dict) or lineage.get("code_tree") is None:
        return dict(version)
    return {**version, "metadata": {**metadata, "lineage": {**lineage, "code_tree": None}}}


def lineage_code_tree(version: Mapping[str, Any]) -> str | None:
    """The code tree a version's lineage names (a job's outputs carry it), if any."""
    lineage = (version.get("metadata") or {}).get("lineage")
    tree = lineage.get("code_tree") if isinstance(lineage, dict) else None
    return tree if isinstance(tree, str) else None


def writers(entry: Entry) -> str:
    """Who may change an entry, in words (for refusals)."""
    owner = entry["owner"]
    if "group" in owner:
        return f"members of group {owner['group']!r} and admins"
    return f"{owner['user']} and admins"


# --- removal --------------------------------------------------------------------------


def _lineage_names(version: Version) -> Iterator[tuple[str, str, str]]:
    """(kind, name, number) of each version this version's lineage names."""
    lineage = (version.get("metadata") or {}).get("lineage") or {}
    for key, kind in LINEAGE_KEYS.items():
        for ref in lineage.get(key, ()):
            name, _, number = str(ref).partition("@")
            if number.isdigit():
                yield kind, name, number


def lineage_pins(entries: Iterable[Entry]) -> dict[Pin, list[str]]:
    """Which versions are named in some version's lineage, and by which (`model x@2`)."""
    pins: dict[Pin, list[str]] = {}
    for entry in entries:
        for v in entry["versions"]:
            for kind, name, number in _lineage_names(v):
                by = f"{entry['kind']} {format_ref(entry['name'], v['version'])}"
                pins.setdefault((kind, name, int(number)), []).append(by)
    return pins


def pinned_entries(entry: Entry) -> set[tuple[str, str]]:
    """The entries (kind, name) whose versions some version of `entry` names in its
    lineage: those whose removal `entry` can hold back. A removal or a collect decides
    from the entries it removes from and those that pin them (`plan_removal` and
    `collectable` need no other entry)."""
    return {(kind, name) for v in entry["versions"] for kind, name, _ in _lineage_names(v)}


def keep_reasons(entry: Entry, version: Version, active_jobs: Collection[int],
                 pins: Mapping[Pin, list[str]]) -> list[str]:
    """Why a version must be kept for now: unfinished jobs that use it, versions whose
    lineage names it. Empty: it may go."""
    reasons = [f"job {j} uses it and has not finished"
               for j in version.get("used_by", ()) if j in active_jobs]
    reasons += [f"{by} names it in its lineage"
                for by in pins.get((entry["kind"], entry["name"], version["version"]), ())]
    return reasons


@dataclass(frozen=True)
class Removal:
    """What removing some versions of an entry does: the versions that go now, those
    kept (marked for deletion) with the reasons, and whether the entry goes too."""

    removed: tuple[int, ...]
    kept: dict[int, list[str]]
    entry_removed: bool


def plan_removal(entries: Iterable[Entry], kind: str, name: str, numbers: Collection[int],
                 active_jobs: Collection[int]) -> Removal:
    """Remove versions `numbers` of entry (kind, name) unless something still needs them.
    `entries` holds that entry and at least every entry that pins it (`pinned_entries`).

    Versions removed together do not keep each other: a model's version 2 whose lineage
    names its version 1 does not stop `remove model` from taking both."""
    entries = list(entries)
    entry = next(e for e in entries if e["kind"] == kind and e["name"] == name)
    wanted = [v for v in entry["versions"] if v["version"] in numbers]
    gone: set[int] = set()
    while True:  # grows only: each pass drops lineage pins of the versions going
        rest = [e if e is not entry else
                {**e, "versions": [v for v in e["versions"] if v["version"] not in gone]}
                for e in entries]
        pins = lineage_pins(rest)
        now = {v["version"] for v in wanted if not keep_reasons(entry, v, active_jobs, pins)}
        if now == gone:
            break
        gone = now
    kept = {v["version"]: keep_reasons(entry, v, active_jobs, pins)
            for v in wanted if v["version"] not in gone}
    removed = tuple(sorted(gone))
    return Removal(removed, kept,
                   entry_removed=all(v["version"] in gone for v in entry["versions"]))


def apply_removal(entry: Mapping[str, Any], removal: Removal) -> dict[str, Any]:
    """The entry after `removal`: removed versions dropped, kept ones marked (and their
    tag freed, so it can name a live version)."""
    versions = []
    for v in entry["versions"]:
        if v["version"] in removal.removed:
            continue
        if v["version"] in removal.kept:
            v = {**v, "deleted": True, "tag": None}
        versions.append(v)
    return {**entry, "versions": versions}


def collectable(entries: Iterable[Entry], active_jobs: Collection[int]
                ) -> dict[tuple[str, str], list[int]]:
    """Versions marked for deletion that nothing needs any more, per (kind, name), among
    `entries`: their answer is complete for those holding marked versions when `entries`
    holds every entry that pins one of them (`pinned_entries`)."""
    entries = list(entries)
    pins = lineage_pins(entries)
    out: dict[tuple[str, str], list[int]] = {}
    for entry in entries:
        for v in entry["versions"]:
            if v.get("deleted") and not keep_reasons(entry, v, active_jobs, pins):
                out.setdefault((entry["kind"], entry["name"]), []).append(v["version"])
    return out


# --- lineage --------------------------------------------------------------------------


def lineage_refs(lineage: Mapping[str, Any]) -> dict[str, list[str]]:
    """The registry references a lineage names, per key (`datasets`, `models`); the
    singular keys `dataset` and `model` are accepted too. Raises RefError on bad shapes."""
    out: dict[str, list[str]] = {}
    for key, value in lineage.items():
        plural = _LINEAGE_ALIASES.get(key, key)
        if plural not in LINEAGE_KEYS:
            continue
        refs = [value] if isinstance(value, str) else value
        if not isinstance(refs, list) or not all(isinstance(r, str) for r in refs):
            raise RefError(f"lineage.{key}: a reference like name@3, or a list of them")
        out.setdefault(plural, []).extend(refs)
    return out

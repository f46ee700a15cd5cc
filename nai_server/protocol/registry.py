"""Datasets and models on the wire."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field

from nai_server.protocol.base import (
    NAME_PATTERN,
    DigestText,
    FreeJSON,
    Model,
    Reply,
    _digest,
)
from nai_server.protocol.validation import described

# --- registries -----------------------------------------------------------------------
# Datasets and models (DESIGN §3): the same shapes under /v1/datasets and /v1/models.
# A version is a tree plus metadata; `ref` in paths is a number, a tag, or `latest`.

TAG_PATTERN = described(r"^[A-Za-z][A-Za-z0-9._-]{0,63}$",
                        "use letters, digits, '.', '_' or '-', starting with a letter (a "
                        "number names a version), at most 64 characters")
RegistryKind = Literal["dataset", "model"]


class VersionCreate(Model):
    """A new version of an existing dataset or model: a tree already on the server.

    `metadata` is free JSON (metrics, hyper-parameters...); `metadata.lineage` may name
    what it came from (`{"datasets": ["cifar10@2"], "models": ["resnet@1"], "job": 12}`):
    those references are pinned to exact versions, and those versions are kept while
    this one exists."""

    tree_id: Annotated[DigestText, AfterValidator(_digest)] = Field(min_length=64,
                                                                     max_length=64)
    description: str = Field(default="", max_length=4096)
    tag: str | None = Field(default=None, pattern=TAG_PATTERN)
    metadata: FreeJSON = Field(default_factory=dict)
    # A push of the tree the latest version already holds records nothing (as git
    # refuses an empty commit) unless this is set.
    allow_same: bool = False


class RegistryCreate(VersionCreate):
    """A new dataset or model with its version 1. `group` makes a group the owner (the
    caller must be a member); `shared` lets every registered user read it."""

    name: str = Field(pattern=NAME_PATTERN)
    group: str | None = Field(default=None, pattern=NAME_PATTERN)
    shared: bool = False


class RegistryVersion(Reply):
    version: int
    tag: str | None
    tree_id: str
    size: int
    files: int
    created_at: float
    created_by: str
    description: str
    metadata: dict[str, Any]
    deleted: bool = False  # marked for deletion, kept while something still uses it
    used_by: list[int] = Field(default_factory=list)  # ids of jobs that used it


class PushedVersion(RegistryVersion):
    """What a push answers: the new version (201), or, when the pushed tree is the one
    the latest version already holds and `allow_same` was not set, that latest version
    with `unchanged` true (200): nothing was recorded, its tag, description and
    metadata were not changed."""

    unchanged: bool = False


class RegistryHead(Reply):
    """What a listing line and a full entry share: who owns it, who reads it."""

    kind: RegistryKind
    name: str
    owner: dict[str, str]  # {"user": U} or {"group": G}
    visibility: Literal["private", "shared"]
    shared_with_groups: list[str]
    description: str
    created_at: float
    latest: int | None  # None: every version is marked for deletion


class RegistrySummary(RegistryHead):
    """One line of a listing: the entry and its latest version."""

    latest_tag: str | None = None
    size: int = 0  # of the latest version
    files: int = 0
    versions: int = 0  # live versions
    may_write: bool = False
    # The latest version's chosen metric (`nai model register --metric`), when it has one:
    # {"name", "best", "last", "direction", ...}
    metric: dict[str, Any] | None = None


class RegistryEntry(RegistryHead):
    """A dataset or model with all its versions, oldest first."""

    versions: list[RegistryVersion]
    may_write: bool = False


class SharingUpdate(Model):
    """Who besides the owners may read: everyone registered (`shared`), and/or these
    groups. Replaces the previous setting."""

    shared: bool = False
    groups: list[str] = Field(default_factory=list, max_length=1000)


class TagUpdate(Model):
    """Put `tag` on a version (moving it from another version), or clear it with null."""

    tag: str | None = Field(default=None, pattern=TAG_PATTERN)


class RemovalResult(Reply):
    """What a removal did. Versions still used by an unfinished job or named in another
    version's lineage are kept, marked for deletion, and go once nothing needs them."""

    kind: RegistryKind
    name: str
    removed: list[int]
    kept: dict[int, list[str]]  # version → why it is kept
    entry_removed: bool
    message: str


class ModelFromJob(Model):
    """`POST /v1/models/{name}/from-job`: a finished job's outputs (or the folder or
    file `path` in them) as the next version of model `name`, created when new (owned
    by the caller, or by `group`). The caller must be able to read the job's outputs
    and write the model. The version's metadata holds the job's lineage and a summary
    of its metrics (best and last of each); `metric` names the one that matters, with
    its direction (`min` or `max`; guessed from the name when not given: min for
    losses, errors and perplexities)."""

    job: int = Field(ge=1)
    path: str = Field(default="", max_length=4096)
    group: str | None = Field(default=None, pattern=NAME_PATTERN)
    description: str = Field(default="", max_length=4096)
    tag: str | None = Field(default=None, pattern=TAG_PATTERN)
    metric: str | None = Field(default=None, min_length=1, max_length=100)
    direction: Literal["min", "max"] | None = None
    # The job's spec and command kept with the version, so `nai finetune` can run it.
    with_code: bool = False

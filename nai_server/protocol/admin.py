"""What admins ask of the store and the plugins."""

from __future__ import annotations

from typing import Literal

from nai_server.protocol.base import (
    Model,
    Reply,
)
from nai_server.protocol.registry import RegistryKind

# --- store verification (nai-admin store verify) --------------------------------------


class StoreVerifyStart(Model):
    """Start verifying the blob store; `repair` moves corrupt blobs and trees aside."""

    repair: bool = False


class DamagedBlob(Reply):
    digest: str
    problem: Literal["missing", "corrupt"]
    moved_to: str | None  # where --repair put it, relative to the store
    owners: list[str]  # who uploaded it: they can send it again


class DamagedTree(Reply):
    id: str
    # missing: named by a job or version, not stored; corrupt: its file does not match
    # its id; incomplete: files in it lost their blobs (`files`, the first 100).
    problem: Literal["missing", "corrupt", "incomplete"]
    files: list[str]
    damaged_files: int
    moved_to: str | None


class DamagedTreeUse(Reply):
    role: str  # code, outputs, dataset, model
    tree_id: str
    problem: str


class DamagedJob(Reply):
    id: int
    user: str
    state: str
    trees: list[DamagedTreeUse]


class DamagedVersion(Reply):
    kind: RegistryKind
    name: str
    version: int
    tree_id: str
    problem: str
    owner: str


class StoreReport(Reply):
    """What the running or last verification found (state `never` before the first)."""

    state: Literal["never", "running", "done", "stopped", "failed"]
    repair: bool
    started_at: float | None
    finished_at: float | None
    error: str | None
    blobs_checked: int
    bytes_checked: int
    trees_checked: int
    blobs: list[DamagedBlob]
    trees: list[DamagedTree]
    jobs: list[DamagedJob]
    versions: list[DamagedVersion]
    stray: list[str]  # files in the store that are neither blob nor tree, left alone
    unlisted: dict[str, int]  # per list above: how many more were found than it shows
    clean: bool


class PluginInfo(Reply):
    """A plugin installed in the server's environment (`GET /v1/plugins`). state: ok,
    disabled (not enabled in the server config), broken (error says why; shown to
    admins only), unsupported (a kind the server does not run yet), missing
    (configured but not installed)."""

    name: str
    kind: str
    version: str | None
    state: Literal["ok", "disabled", "broken", "unsupported", "missing"]
    required: bool
    error: str | None
    stuck: int = 0  # calls still running past their timeout: a submit rule is busy


class PluginChoice(Model):
    """`PUT /v1/plugins/{name}`: enable or disable an installed plugin (persisted)."""

    enabled: bool

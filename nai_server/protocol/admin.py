"""What admins ask of the store and the plugins."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

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


# --- store gc (nai-admin store gc) ----------------------------------------------------

GC_GRACE_SECONDS = 24 * 3600


class StoreGcStart(Model):
    """Start a gc of the blob store: delete the trees and blobs nothing refers to that
    nobody stored or was told of in the last `grace_seconds`; `dry_run`: only count."""

    grace_seconds: float = Field(default=GC_GRACE_SECONDS, ge=0, le=10 * 365 * 86400,
                                 allow_inf_nan=False)
    dry_run: bool = False


class GcReport(Reply):
    """What the running or last gc did (state `never` before the first). Kept counts
    what stays; young_*: kept only because they were stored or asked for within the
    grace period; bytes_freed: of the deleted blobs' bytes, those no job folder still
    links (those go with their folder)."""

    state: Literal["never", "running", "done", "stopped", "failed"]
    dry_run: bool
    grace_seconds: float
    started_at: float | None
    finished_at: float | None
    error: str | None
    phase: str | None  # mark, trees, blobs, claims while running
    cutoff: float | None  # unreferenced files last touched before this went
    referenced_trees: int  # trees kept because something names them
    trees_deleted: int
    trees_kept: int
    young_trees_kept: int
    blobs_deleted: int
    bytes_deleted: int
    bytes_freed: int
    blobs_kept: int
    bytes_kept: int
    young_blobs_kept: int
    claims_deleted: int
    stray: list[str]  # files in the store that are neither blob nor tree, left alone
    unlisted_stray: int


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

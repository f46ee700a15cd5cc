"""The wire contract between the daemon and its clients.

This is the only server module that `nai_tui` imports: API version, the error
tree both sides raise, and the pydantic models of request and response bodies.
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, Required

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema, with_config
from typing_extensions import TypedDict

from nai_server.core.bounds import MAX_ID as MAX_ID
from nai_server.core.bounds import json_problem

# The job states and which of them a job never leaves: one vocabulary for the daemon, the
# batch CLI and the TUI (JobInfo.state carries the enum's value).
from nai_server.core.states import TERMINAL
from nai_server.core.states import JobState as JobState

# Which paths and symlinks a tree may hold is part of the wire contract: clients check
# it before sending a folder and before writing a tree the server sent.
from nai_server.core.trees import UNNAMED_BLOB as UNNAMED_BLOB
from nai_server.core.trees import is_digest
from nai_server.core.trees import link_problems as link_problems
from nai_server.core.trees import path_problem as path_problem

# Sizes and running times read the same in the daemon's messages, the CLI and the TUI.
from nai_server.core.units import format_elapsed as format_elapsed
from nai_server.core.units import format_size as format_size

# Major.minor: a client refuses a server with another major version.
API_VERSION = "1.0"

TERMINAL_STATES: frozenset[JobState] = TERMINAL
"""States a job never leaves: succeeded, failed, cancelled, timed_out, lost."""

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
METHOD_OVERRIDE_HEADER = "X-HTTP-Method-Override"


# --- errors ---------------------------------------------------------------------------


class NaiError(Exception):
    """Root of every error `nai` raises on purpose; the message tells the user what to do."""


class ConnectionFailed(NaiError):
    """The server could not be reached (socket missing, SSH failure, daemon down)."""


class VersionMismatch(NaiError):
    """Client and server speak different major API versions."""


class ApiError(NaiError):
    """An error that travels as `{"error": {"code", "message"}}` with an HTTP status."""

    status: ClassVar[int] = 500
    code: ClassVar[str] = "internal"

    def __init__(self, message: str, *, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}

    def to_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            body["details"] = self.details
        return {"error": body}


class Invalid(ApiError):
    """The request is malformed or names something impossible."""

    status = 400
    code = "invalid"


class Unauthorized(ApiError):
    """The caller's identity could not be established."""

    status = 401
    code = "unauthenticated"


class Forbidden(ApiError):
    """The caller is known but may not do this."""

    status = 403
    code = "forbidden"


class NotFound(ApiError):
    """No such resource (or the caller may not know it exists)."""

    status = 404
    code = "not_found"


class Conflict(ApiError):
    """The request clashes with current state (duplicate, wrong job state, ...)."""

    status = 409
    code = "conflict"


class Unavailable(ApiError):
    """The daemon cannot serve this now (shutting down, draining)."""

    status = 503
    code = "unavailable"


class DiskFull(ApiError):
    """The server's disk is full (or below its free-space floor): nothing new is stored."""

    status = 507
    code = "disk_full"


ERRORS_BY_CODE: dict[str, type[ApiError]] = {
    cls.code: cls
    for cls in (Invalid, Unauthorized, Forbidden, NotFound, Conflict, Unavailable, DiskFull)
}
ERRORS_BY_CODE[ApiError.code] = ApiError


def error_from_body(status: int, body: Any) -> ApiError:
    """Rebuild the typed error a server sent (client side)."""
    err = body.get("error") if isinstance(body, dict) else None
    if not isinstance(err, dict):
        return ApiError(f"server answered HTTP {status} without an error body")
    cls = ERRORS_BY_CODE.get(str(err.get("code")), ApiError)
    return cls(str(err.get("message", "")), details=err.get("details") or None)


# --- models ---------------------------------------------------------------------------


class ErrorInfo(BaseModel):
    """What went wrong: `code` is one of ERRORS_BY_CODE's keys (or an HTTP-level code
    such as `too_large`), `message` says what to do, `details` is per error."""

    model_config = ConfigDict(extra="ignore")

    code: str
    message: str
    details: dict[str, Any] | None = None


class ErrorBody(BaseModel):
    """The body of every error answer, whatever its status."""

    model_config = ConfigDict(extra="ignore")

    error: ErrorInfo


def _free_json(value: Any) -> Any:
    """Free JSON a client sends (metadata, spec fields) must be storable as it is."""
    if (why := json_problem(value)) is not None:
        raise ValueError(why)
    return value


def _digest(value: str | None) -> str | None:
    if value is not None and not is_digest(value):
        raise ValueError("must be a tree id: 64 lowercase hex characters (a sha256 digest)")
    return value


FreeJSON = Annotated[dict[str, Any], AfterValidator(_free_json)]
DIGEST_PATTERN = r"^[0-9a-f]{64}$"
# A blob or tree id, as the schema says it; the code checks it itself (its messages).
DigestText = Annotated[str, WithJsonSchema({"type": "string", "pattern": DIGEST_PATTERN})]


class Model(BaseModel):
    """Base for wire models: unknown fields are refused so typos surface."""

    model_config = ConfigDict(extra="forbid")


class Reply(BaseModel):
    """Base for what the server answers: unknown fields are ignored, so a server that
    adds one (a minor API version) still serves older clients. What clients send stays
    a `Model`, strict. (Quota and DrainState travel both ways: strict here, and the
    client drops what it does not know before reading them.)"""

    model_config = ConfigDict(extra="ignore")


class VersionInfo(Reply):
    api_version: str
    server_version: str
    mode: Literal["personal", "multi-user"]


class Me(Reply):
    user: str
    uid: int
    admin: bool
    groups: list[str]
    mode: Literal["personal", "multi-user"]


class Quota(Model):
    """Limits for a user or a group; None means unlimited."""

    max_gpus: int | None = Field(default=None, ge=0, le=1_000_000)
    gpu_hours: float | None = Field(default=None, ge=0, le=1e12, allow_inf_nan=False)
    period_days: int = Field(default=30, ge=1, le=3660)


class UserCreate(Model):
    name: str = Field(pattern=NAME_PATTERN)


class UserInfo(Reply):
    name: str
    uid: int | None
    admin: bool
    groups: list[str]
    quota: Quota
    created_at: float


class GroupCreate(Model):
    name: str = Field(pattern=NAME_PATTERN)


class GroupInfo(Reply):
    name: str
    members: list[str]
    quota: Quota
    created_at: float


class MemberAdd(Model):
    user: str = Field(pattern=NAME_PATTERN)


class DrainState(Model):
    drained: bool


class MissingRequest(Model):
    digests: list[DigestText] = Field(max_length=1_000_000)


class MissingResponse(Reply):
    missing: list[str]


class PathsRequest(Model):
    paths: list[str] = Field(max_length=1_000_000)


class UploadResult(Reply):
    stored: int
    bytes: int


class TreeEntryModel(Reply):
    path: str
    kind: Literal["file", "symlink"] = "file"
    size: int = 0
    mode: int = 0o644
    sha256: str = ""
    target: str = ""


@with_config(ConfigDict(extra="forbid"))
class TreeEntryIn(TypedDict, total=False):
    """An entry of a tree being recorded: checked field by field by the tree rules
    (`parse_manifest`), which also say which fields a file or a symlink needs.

    A plain dict, not a model: a tree of 10,000 files was validated into models and
    dumped back to dicts for those rules, a fifth of the time of recording it."""

    path: Required[str]
    kind: Literal["file", "symlink"]
    size: int
    mode: int
    sha256: str
    target: str


class TreeCreate(Model):
    entries: list[TreeEntryIn]


class TreeRef(Reply):
    """A recorded tree, without its entries (what creating one answers)."""

    id: str
    files: int
    size: int


class TreeInfo(Reply):
    id: str
    entries: list[TreeEntryModel]
    files: int
    size: int


class JobSubmit(Model):
    """A job: its spec and the tree of its code.

    The spec comes either as `spec` (the fields of nai.yaml) or as `spec_yaml` (the
    file's text, so errors can name its lines), plus `overrides` from command-line
    flags. The server is the one place that validates specs."""

    # One of the two, not both (what `Jobs.parse` accepts), said in the schema too.
    model_config = ConfigDict(extra="forbid", json_schema_extra={"anyOf": [
        {"required": ["spec"], "properties": {"spec": {"type": "object"},
                                              "spec_yaml": {"type": "null"}}},
        {"required": ["spec_yaml"], "properties": {"spec_yaml": {"type": "string"},
                                                   "spec": {"type": "null"}}},
    ]})

    spec: FreeJSON | None = None
    spec_yaml: str | None = Field(default=None, max_length=1_000_000)
    source: str = Field(default="nai.yaml", max_length=1024)
    overrides: FreeJSON = Field(default_factory=dict)
    code_tree: Annotated[DigestText | None, AfterValidator(_digest)] = None
    # Fine-tuning: run the spec's `model` version's own files as the code (the server
    # resolves it with the caller's read access; then `code_tree` must be empty).
    code_from_model: bool = False


class JobInfo(Reply):
    id: int
    name: str
    user: str
    group: str | None
    state: str  # a JobState value
    reason: str | None = None  # why a queued job waits
    est_start: float | None = None
    message: str | None = None
    spec: dict[str, Any]
    code_tree: str | None
    gpus: list[int] = Field(default_factory=list)
    submitted_at: float
    started_at: float | None = None
    ended_at: float | None = None
    exit_code: int | None = None
    output_tree: str | None = None  # only for those who may read the job's outputs
    dataset: dict[str, Any] | None = None  # the exact version: {name, version, tree_id}
    model: dict[str, Any] | None = None
    registered: str | None = None  # `register_model`: the version it made, e.g. "m@3"


class JobList(Reply):
    """A page of jobs, newest id first. `total` counts every job matching the filters
    (not the cursor); pass `next_before` back as `before` for the next page (None: no
    more)."""

    jobs: list[JobInfo]
    total: int
    offset: int
    limit: int
    next_before: int | None = None


class MetricsPage(Reply):
    """Lines of the job's metrics.jsonl from `since` on; `next` continues."""

    metrics: list[dict[str, Any]]
    next: int
    skipped: int = 0  # lines that were not JSON objects


class ForeignProcess(Reply):
    """A process on a GPU that nai did not give it: someone bypassing the queue, or a
    job (`job`) that reached a GPU other than its own."""

    pid: int
    user: str | None
    used_memory: int
    job: int | None = None


class GpuState(Reply):
    index: int
    uuid: str
    name: str
    memory_total: int
    memory_used: int
    memory_free: int
    utilization: int
    job: int | None = None
    user: str | None = None
    foreign: list[ForeignProcess] = Field(default_factory=list)


class GpuList(Reply):
    source: Literal["nvml", "fake"]
    note: str | None = None
    gpus: list[GpuState]
    cpu_slots: int
    cpu_slots_used: int


# --- registries -----------------------------------------------------------------------
# Datasets and models (DESIGN §3): the same shapes under /v1/datasets and /v1/models.
# A version is a tree plus metadata; `ref` in paths is a number, a tag, or `latest`.

TAG_PATTERN = r"^[A-Za-z][A-Za-z0-9._-]{0,63}$"
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


class PluginChoice(Model):
    """`PUT /v1/plugins/{name}`: enable or disable an installed plugin (persisted)."""

    enabled: bool


# --- log ranges and search (the TUI's pager over a log of any length) -----------------

MAX_LOG_RANGE = 1 << 20  # bytes one log-range call returns, at most
MAX_LOG_PATTERN = 256  # characters of a log search term
MAX_LOG_MATCHES = 1000  # offsets one log search returns, at most


class LogMatches(Reply):
    """Where a term occurs in a job's log: byte offsets of the matches (ascending, or
    descending when searching backward). The scan stops after a bounded number of
    bytes: `next` is the offset to continue from (None: the scan reached the end, or
    the start when backward). `size` is the log's size when it was read."""

    offsets: list[int]
    next: int | None = None
    size: int


# --- where things live on this machine -------------------------------------------------
# One rule for both sides: the client's config, cache and known hosts, and where a
# personal daemon keeps its state and socket (which the client starts and finds).
from nai_server.paths import default_paths as default_paths  # noqa: E402
from nai_server.paths import user_dir as user_dir  # noqa: E402

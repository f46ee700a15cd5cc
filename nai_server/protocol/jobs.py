"""Accounts, trees, jobs, GPUs and logs on the wire."""

from __future__ import annotations

from typing import Annotated, Any, Literal, NamedTuple, Required

from pydantic import AfterValidator, ConfigDict, Field, with_config
from typing_extensions import TypedDict

from nai_server.protocol.base import (
    NAME_PATTERN,
    DigestText,
    FreeJSON,
    Model,
    Reply,
    _digest,
)


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
    why: str | None = None  # in words, where a free GPU is kept for another job (show only)
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
    service: str | None = None  # the service whose replica holds it (`user` runs it)
    node: str | None = None  # launcher: slurm: the cluster node it is on (uuid: slurm:NODE:IDX)
    slurm_job: int | None = None  # launcher: slurm: the Slurm job holding it (nai's or not)


class GpuList(Reply):
    source: Literal["nvml", "fake"]
    note: str | None = None
    gpus: list[GpuState]
    cpu_slots: int
    cpu_slots_used: int
    cluster: str | None = None  # "slurm": the GPUs are a Slurm cluster's, not this host's



# --- log ranges and search (the TUI's pager over a log of any length) -----------------

MAX_LOG_RANGE = 1 << 20  # bytes one log-range call returns, at most
MAX_LOG_PATTERN = 256  # characters of a log search term
MAX_LOG_MATCHES = 1000  # offsets one log search returns, at most
MAX_LOG_SPANS = 256  # stderr spans one log-range reply holds, at most (it stops before more)
LOG_STDERR_HEADER = "X-Log-Stderr"  # "start-end,..." of a range's stderr, from its start


class LogPiece(NamedTuple):
    """Bytes of a job's log from `offset`, the log's size, and which of those bytes came
    from the job's stderr: [start, end) offsets of the whole log, sorted (empty from a
    server that does not tell, or for a job started before stderr was told apart)."""

    offset: int
    data: bytes
    size: int
    stderr: tuple[tuple[int, int], ...] = ()

    def parts(self) -> list[tuple[bytes, bool]]:
        """The data in pieces, in order, each with whether it came from stderr."""
        out: list[tuple[bytes, bool]] = []
        at, end = self.offset, self.offset + len(self.data)
        for start, stop in self.stderr:
            start, stop = max(start, at), min(stop, end)
            if start >= stop:
                continue
            if start > at:
                out.append((self.data[at - self.offset:start - self.offset], False))
            out.append((self.data[start - self.offset:stop - self.offset], True))
            at = stop
        if at < end:
            out.append((self.data[at - self.offset:], False))
        return out


def format_spans(offset: int, spans: list[tuple[int, int]]) -> str:
    """LOG_STDERR_HEADER's value: spans as "start-end" from `offset`, comma-separated."""
    return ",".join(f"{start - offset}-{end - offset}" for start, end in spans)


def parse_spans(offset: int, length: int, text: str) -> tuple[tuple[int, int], ...]:
    """LOG_STDERR_HEADER read back as offsets of the log: what is not a span inside
    the `length` bytes from `offset` is skipped, the rest sorted and merged."""
    spans: list[tuple[int, int]] = []
    for word in text.split(",")[:MAX_LOG_SPANS]:
        start, _, end = word.strip().partition("-")
        if start.isdigit() and end.isdigit() and int(start) < int(end) <= length:
            spans.append((offset + int(start), offset + int(end)))
    merged: list[tuple[int, int]] = []
    for lo, hi in sorted(spans):
        if merged and lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return tuple(merged)


class LogMatches(Reply):
    """Where a term occurs in a job's log: byte offsets of the matches (ascending, or
    descending when searching backward). The scan stops after a bounded number of
    bytes: `next` is the offset to continue from (None: the scan reached the end, or
    the start when backward). `size` is the log's size when it was read."""

    offsets: list[int]
    next: int | None = None
    size: int

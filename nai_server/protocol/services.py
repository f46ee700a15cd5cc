"""Services on the wire: a registered model version served on the allocator's GPUs.

A service is owned by a user or a group, pins one model version, and runs `replicas`
long-lived processes as its owner. Callers reach it through the daemon
(`/v1/services/{name}/invoke/{path}`) or, where the admin enabled it, the HTTP gateway
with a bearer token.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from nai_server.protocol.base import NAME_PATTERN, NAME_WORDS, Model, Reply
from nai_server.protocol.errors import ApiError
from nai_server.protocol.validation import described

# `name@version`, `name@tag` or `name` (its latest version).
MODEL_REF_PATTERN = described(
    r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}(@[A-Za-z0-9][A-Za-z0-9._-]{0,63})?$",
    f"write NAME, NAME@VERSION or NAME@TAG, each part {NAME_WORDS}, at most 64 characters")


class ServiceCreate(Model):
    """`nai serve MODEL@V --name N`: what the caller asks for; the rest comes from the
    version's `serve:` section (kept with the version) or the defaults."""

    name: str = Field(pattern=NAME_PATTERN)
    model: str = Field(pattern=MODEL_REF_PATTERN, max_length=130)
    gpus: int | None = Field(default=None, ge=0, le=64)
    gpu_memory: str | None = Field(default=None, max_length=32)  # e.g. "8G"
    replicas: int = Field(default=1, ge=0, le=64)
    group: str | None = Field(default=None, pattern=NAME_PATTERN)  # owned by this group
    visibility: Literal["private", "group", "shared"] = "private"
    idle_timeout: float | None = Field(default=None, gt=0, le=30 * 86400)  # seconds
    max_batch: int | None = Field(default=None, ge=1, le=4096)
    max_wait_ms: float | None = Field(default=None, ge=0, le=60_000)
    public: bool = False  # reachable on the gateway without a token, if the admin allows


class ServiceUpdate(Model):
    """`nai service update/scale`: fields left out stay as they are. A new `model`
    rolls: new replicas ready before old ones stop; one never ready is rolled back."""

    model: str | None = Field(default=None, pattern=MODEL_REF_PATTERN, max_length=130)
    replicas: int | None = Field(default=None, ge=0, le=64)
    visibility: Literal["private", "group", "shared"] | None = None
    idle_timeout: float | None = Field(default=None, ge=0, le=30 * 86400)  # 0: never idle
    public: bool | None = None


class RequestStats(Reply):
    """Request metrics kept in memory by the daemon's proxy (since it started)."""

    requests: int = 0
    errors: int = 0  # 5xx answers and replicas that could not be reached
    per_second: float = 0.0  # over the last minute
    p50_ms: float | None = None
    p99_ms: float | None = None


class ReplicaInfo(Reply):
    index: int
    state: str  # a ServiceState value
    model: str  # name@version this replica serves (differs from the service's mid-update)
    gpus: list[int] = Field(default_factory=list)
    pid: int | None = None
    started_at: float | None = None
    ready_at: float | None = None
    restarts: int = 0
    message: str | None = None
    stats: RequestStats = Field(default_factory=RequestStats)


class ServiceInfo(Reply):
    name: str
    owner: dict[str, str]  # {"user": U} or {"group": G}
    user: str  # who created it: the unix user its replicas run as
    model: str  # name@version
    state: str  # a ServiceState value: the best of its replicas'
    visibility: Literal["private", "group", "shared"]
    public: bool = False
    replicas: int  # wanted
    gpus: int  # per replica
    idle_timeout: float | None = None
    max_batch: int | None = None
    max_wait_ms: float | None = None
    created_at: float
    updated_at: float
    message: str | None = None  # why it failed, with the last log lines
    replica_info: list[ReplicaInfo] = Field(default_factory=list)
    stats: RequestStats = Field(default_factory=RequestStats)
    may_write: bool = False  # the caller may update, scale and stop it
    # What it serves: a model version, or (`nai dataset annotate`) an annotator's web app
    # over the dataset version in `model`, whose labels are saved as a version of
    # `labels_to` when it stops (`saved` names it then).
    kind: Literal["model", "annotator"] = "model"
    plugin: str | None = None  # an annotator's name and version, e.g. "labels 0.1.0"
    labels_to: str | None = None
    saved: str | None = None

    def source(self) -> str:
        """What it serves, in words: `m@3`, or `photos@1 (annotator labels 0.1.0)`."""
        return self.model if self.kind == "model" else f"{self.model} (annotator {self.plugin})"


class ServiceList(Reply):
    services: list[ServiceInfo]


class TokenCreate(Model):
    label: str = Field(default="", max_length=200)


class TokenInfo(Reply):
    id: str
    label: str
    created_at: float
    token: str | None = None  # shown once, when created; only a hash is kept


class BadGateway(ApiError):
    """A service's replica was reached but did not answer with HTTP in time."""

    status = 502
    code = "bad_gateway"


class BodyTooLarge(ApiError):
    """A request to a service larger than the daemon relays."""

    status = 413
    code = "too_large"

"""A job as the daemon's use cases and run loop see it: a typed, immutable record.

The store keeps jobs as JSON documents; `Job.from_doc` and `Job.to_doc` are the one
place where a document's keys, their defaults and their encodings are known, so that
no caller repeats `spec.get("gpus", 1)` or compares a state with a bare string. A
change is made by naming fields (`changes_doc(state=..., pid=...)`), which gives the
partial document a store merges into the stored one.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, TypeVar

from nai_server.core.spec import FIELDS as SPEC_FIELDS
from nai_server.core.spec import JobSpec
from nai_server.core.states import ACTIVE, TERMINAL, JobState

Doc = dict[str, Any]
_T = TypeVar("_T")


class ReadOnly(Mapping[str, Any]):
    """A mapping no one can change: what a record shares with its other readers."""

    __slots__ = ("_data",)

    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return repr(self._data)

    def copy(self) -> dict[str, Any]:
        """A shallow copy the caller may change."""
        return dict(self._data)


@dataclass(frozen=True)
class Pin:
    """The exact dataset or model version a job was given when it was submitted."""

    name: str
    version: int
    tree_id: str

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any] | None) -> Pin | None:
        if not doc:
            return None
        return cls(name=doc["name"], version=doc["version"], tree_id=doc["tree_id"])

    def to_doc(self) -> Doc:
        return {"name": self.name, "version": self.version, "tree_id": self.tree_id}


@dataclass(frozen=True)
class Stop:
    """A stop under way: SIGTERM sent `at`, SIGKILL due at `deadline`. `kind` is the
    state the job ends in (a preempted one is requeued instead); `for_job` is the job a
    preemption makes room for."""

    kind: JobState
    at: float
    deadline: float
    killed: bool = False
    for_job: int | None = None

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any] | None) -> Stop | None:
        if not doc:
            return None
        at = float(doc.get("at", 0.0))
        return cls(kind=JobState(doc["kind"]), at=at, deadline=float(doc.get("deadline", at)),
                   killed=bool(doc.get("killed", False)), for_job=doc.get("for_job"))

    def to_doc(self) -> Doc:
        doc: Doc = {"kind": self.kind.value, "at": self.at, "deadline": self.deadline,
                    "killed": self.killed}
        if self.kind == JobState.PREEMPTED:
            doc["for_job"] = self.for_job
        return doc


@dataclass(frozen=True)
class Run:
    """A finished stretch of a preempted job on its GPUs: [start, end, how many]."""

    start: float
    end: float
    gpus: int


@dataclass(frozen=True)
class Job:
    """One job record. `gpus` are the GPUs it holds (the spec says how many it asks);
    `runs` the stretches it ran before being preempted; `attained` their service."""

    id: int
    user: str
    state: JobState
    spec: JobSpec
    submitted_at: float
    group: str | None = None
    code_tree: str | None = None
    time_limit: int | None = None
    dataset: Pin | None = None
    model: Pin | None = None
    message: str | None = None
    started_at: float | None = None
    ended_at: float | None = None
    exit_code: int | None = None
    pid: int | None = None
    pid_start: int = -1
    gpus: tuple[int, ...] = ()
    gpu_uuids: tuple[str, ...] = ()
    # GPUs it holds where nai does not place them (Slurm's nodes): how many, not which;
    # what its run is charged for, as `gpus` are on this host.
    gpus_elsewhere: int = 0
    stop: Stop | None = None
    attained: float = 0.0
    runs: tuple[Run, ...] = ()
    preemptions: int = 0
    output_tree: str | None = None
    registered: str | None = None  # `register_model`: the version it made, e.g. "m@3"
    # Which of the server's own requests submitted it (core.processing.PROCESS for
    # `nai dataset process`); None for a job a user's spec describes. No spec sets it.
    made_by: str | None = None
    # Keys of the document this record does not know: kept so a round trip loses nothing.
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @property
    def name(self) -> str:
        return self.spec.name or f"job-{self.id}"

    # Read several times a tick for every hot job: worked out once per record (a
    # record's state never changes), and set by `from_doc` as it builds one.
    @cached_property
    def active(self) -> bool:
        """It holds resources (GPUs or a CPU slot)."""
        return self.state in ACTIVE

    @cached_property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    @cached_property
    def spec_doc(self) -> ReadOnly:
        """The spec in its stored encoding (what the API shows of it), worked out once per
        record: a listing shows every hot job's. Read-only: shared with every reader."""
        return ReadOnly(_spec_doc(self.spec))

    @property
    def depends_on(self) -> tuple[int, ...]:
        return (*self.spec.after, *self.spec.after_ok)

    def pin(self, kind: str) -> Pin | None:
        """The job's dataset or model (`kind`), if it has one."""
        if kind == "dataset":
            return self.dataset
        if kind == "model":
            return self.model
        raise ValueError(f"no pin of kind {kind!r}")

    def summary(self) -> JobSummary:
        return JobSummary(
            id=self.id, user=self.user, state=self.state, group=self.group,
            started_at=self.started_at, ended_at=self.ended_at, gpus=self.gpus,
            gpus_elsewhere=self.gpus_elsewhere, runs=self.runs, code_tree=self.code_tree,
            output_tree=self.output_tree,
            dataset_tree=self.dataset.tree_id if self.dataset else None,
            model_tree=self.model.tree_id if self.model else None)

    @classmethod
    def from_doc(cls, doc: Mapping[str, Any]) -> Job:
        """The record of a stored document (as written by `to_doc` or by older code)."""
        get = doc.get
        pid_start, runs = get("pid_start"), get("runs")
        state = JobState(get("state", JobState.QUEUED))
        return _built(cls, {
            "id": int(get("id", 0)), "user": get("user") or "",
            "state": state, "active": state in ACTIVE, "terminal": state in TERMINAL,
            "spec": spec_of(get("spec") or {}),
            "submitted_at": float(get("submitted_at") or 0.0),
            "group": get("group"), "code_tree": get("code_tree"),
            "time_limit": get("time_limit"),
            "dataset": Pin.from_doc(get("dataset")), "model": Pin.from_doc(get("model")),
            "message": get("message"), "started_at": get("started_at"),
            "ended_at": get("ended_at"), "exit_code": get("exit_code"),
            "pid": get("pid") or None, "pid_start": -1 if pid_start is None else int(pid_start),
            "gpus": tuple(get("gpus") or ()), "gpu_uuids": tuple(get("gpu_uuids") or ()),
            "gpus_elsewhere": int(get("gpus_elsewhere") or 0),
            "stop": Stop.from_doc(get("stop")), "attained": float(get("attained") or 0.0),
            "runs": tuple(Run(float(s), float(e), int(g)) for s, e, g in runs) if runs else (),
            "preemptions": int(get("preemptions") or 0),
            "output_tree": get("output_tree"), "registered": get("registered"),
            "made_by": get("made_by"), "extra": _extra(doc),
        })

    def to_doc(self) -> Doc:
        """The document to store, in its JSON encoding. Fields a job gains as it runs
        are left out while they hold their defaults, as the store always wrote them."""
        fields = {name: getattr(self, name) for name in _KEYS
                  if name in _ALWAYS or getattr(self, name) != _DEFAULTS[name]}
        return {**self.extra, **changes_doc(**fields)}


@dataclass(frozen=True)
class JobSummary:
    """What the questions over every job need of one (fair-share usage, who may read a
    tree through a job, what a damaged tree breaks): what the store keeps in memory of
    each archived job, and what `Job.summary` gives of a hot one. A pinned dataset or
    model is known here by its tree only."""

    id: int
    user: str
    state: JobState
    group: str | None = None
    started_at: float | None = None
    ended_at: float | None = None
    gpus: tuple[int, ...] = ()
    gpus_elsewhere: int = 0
    runs: tuple[Run, ...] = ()
    code_tree: str | None = None
    output_tree: str | None = None
    dataset_tree: str | None = None
    model_tree: str | None = None

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    def trees(self) -> list[tuple[str, str]]:
        """(role, tree id) of every tree the job uses: "code", "outputs", "dataset",
        "model" (the roles of `core.store_check`)."""
        roles = (("code", self.code_tree), ("outputs", self.output_tree),
                 ("dataset", self.dataset_tree), ("model", self.model_tree))
        return [(role, tree) for role, tree in roles if tree]


_KEYS = tuple(f.name for f in dataclasses.fields(Job) if f.name != "extra")
_KNOWN = frozenset(_KEYS)
_ALWAYS = frozenset({"id", "user", "group", "state", "spec", "code_tree", "submitted_at",
                     "time_limit"})
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(Job)
             if f.default is not dataclasses.MISSING}


def changes_doc(**changes: Any) -> Doc:
    """The partial document that sets these fields of a job (named as in `Job`): what a
    store merges into the stored document."""
    doc: Doc = {}
    for key, value in changes.items():
        if key not in _KNOWN:
            raise TypeError(f"a job has no field {key!r}")
        doc[key] = _encode(key, value)
    return doc


def _encode(key: str, value: Any) -> Any:
    if value is None:
        return None
    if key == "state":
        return JobState(value).value
    if key == "spec":
        return _spec_doc(value)
    if key in ("dataset", "model", "stop"):
        return value.to_doc()
    if key == "runs":
        return [[r.start, r.end, r.gpus] for r in value]
    if key in ("gpus", "gpu_uuids"):
        return list(value)
    return value


def spec_of(doc: Mapping[str, Any]) -> JobSpec:
    """The spec a job was submitted with (validated then, so not again here); keys it
    lacks take JobSpec's defaults, the one place they are written."""
    values = {k: doc[k] for k in SPEC_FIELDS if k in doc}
    for key in ("after", "after_ok"):
        if key in values:
            values[key] = tuple(values[key])
    # Read-only: a record may be shared by every reader of the same stored job.
    values["env"] = ReadOnly(dict(values.get("env") or {}))
    return _built(JobSpec, {**_SPEC_DEFAULTS, **values})


def _spec_doc(spec: JobSpec) -> Doc:
    """`spec_to_dict`, for a spec whose env may be read-only."""
    doc = {name: getattr(spec, name) for name in SPEC_FIELDS}
    doc["after"], doc["after_ok"], doc["env"] = list(spec.after), list(spec.after_ok), dict(
        spec.env)
    return doc


_SPEC_DEFAULTS: Doc = {"command": "", **{
    f.name: f.default for f in dataclasses.fields(JobSpec)
    if f.default is not dataclasses.MISSING}}


def _extra(doc: Mapping[str, Any]) -> Mapping[str, Any]:
    """The keys of a stored document that `Job` does not know (usually none)."""
    unknown = doc.keys() - _KNOWN
    return {k: doc[k] for k in unknown} if unknown else _NOTHING


_NOTHING: Mapping[str, Any] = ReadOnly({})


def _built(cls: type[_T], values: Doc) -> _T:
    """A frozen record from values read from the store (checked when they were
    written). The frozen classes' own __init__ sets each field through
    object.__setattr__, some twenty times the cost of copying the document, and every
    tick reads every hot job: the fields are set at once here instead."""
    record = object.__new__(cls)
    record.__dict__.update(values)
    return record

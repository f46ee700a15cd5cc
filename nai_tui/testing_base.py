"""`FakeServerBase`: the in-memory server behind `nai_tui.testing.FakeServerClient`: its
state, the plumbing every faked call goes through (failures, gates, counting) and the
scene-setting calls for jobs, trees, GPUs and users."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import httpx

from nai_server.protocol import (
    ConnectionFailed,
    GpuList,
    GpuState,
    GroupInfo,
    JobInfo,
    Quota,
    RegistryEntry,
    TreeEntryModel,
    TreeInfo,
    UserInfo,
)
from nai_tui.remote.client import ServerClient

GIB = 1 << 30

_T = TypeVar("_T")


def _unfaked(request: httpx.Request) -> httpx.Response:
    return httpx.Response(501, json={"error": {
        "code": "internal", "message": f"FakeServerClient does not fake {request.url.path}"}})


class FakeServerBase(ServerClient):
    """The fake server's state and plumbing (see FakeServerClient)."""

    def __init__(self, name: str = "fake", *, user: str = "alice", admin: bool = False,
                 gpus: int = 4) -> None:
        super().__init__(httpx.Client(transport=httpx.MockTransport(_unfaked),
                                      base_url="http://nai"), name)
        self.user = user
        self.admin = admin
        self.now = 1_700_000_000.0
        self.fail: str | None = None
        self.error: BaseException | None = None
        self.gate: threading.Event | None = None
        self.calls: list[str] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.closed = False
        self._lock = threading.Lock()
        self._jobs: dict[int, JobInfo] = {}
        self._logs: dict[int, bytes] = {}
        self.stderr_spans: dict[int, list[tuple[int, int]]] = {}  # log offsets from stderr
        self._metrics: dict[int, list[dict[str, Any]]] = {}
        self._outputs: dict[int, dict[str, bytes]] = {}
        self.blobs: dict[str, bytes] = {}
        self.trees: dict[str, TreeInfo] = {}
        self._registries: dict[tuple[str, str], RegistryEntry] = {}
        self.submitted: list[dict[str, Any]] = []
        self.gpu_list = GpuList(source="fake", gpus=[_gpu(i) for i in range(gpus)],
                                cpu_slots=8, cpu_slots_used=0)
        self._users: dict[str, UserInfo] = {}
        self._groups: dict[str, GroupInfo] = {}
        self._drained = False
        self.put_user(user, admin=admin)

    # --- plumbing ---------------------------------------------------------------------

    def _enter(self, call: str) -> None:
        with self._lock:
            self.calls.append(call)
            if self.fail is not None:
                raise ConnectionFailed(f"{self.name}: {self.fail}")
            if self.error is not None:
                raise self.error
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        if self.gate is not None:
            self.gate.wait(timeout=30)

    def _leave(self) -> None:
        with self._lock:
            self.in_flight -= 1

    def _do(self, call: str, fn: Callable[..., _T], *args: Any) -> _T:
        self._enter(call)
        try:
            return fn(*args)
        finally:
            self._leave()

    def close(self) -> None:
        self.closed = True

    # --- setting the scene (tests call these) -----------------------------------------

    def add_job(self, name: str = "train", *, user: str | None = None, state: str = "queued",
                gpus: list[int] | None = None, wanted: int = 1, submitted_at: float | None = None,
                started_at: float | None = None, ended_at: float | None = None,
                **fields: Any) -> JobInfo:
        """Put a job on the fake server; returns it."""
        with self._lock:
            job_id = max(self._jobs, default=0) + 1
            spec = {"name": name, "command": "python train.py", "gpus": wanted,
                    "time_limit": "1h", **fields.pop("spec", {})}
            job = JobInfo(id=job_id, name=name, user=user or self.user, group=None, state=state,
                          spec=spec, code_tree=None, gpus=gpus or [],
                          submitted_at=self.now if submitted_at is None else submitted_at,
                          started_at=started_at, ended_at=ended_at, **fields)
            self._jobs[job_id] = job
            self._logs[job_id] = b""
            self._metrics[job_id] = []
            return job

    def update_job(self, job_id: int, **fields: Any) -> JobInfo:
        with self._lock:
            job = self._jobs[job_id].model_copy(update=fields)
            self._jobs[job_id] = job
            return job

    def append_log(self, job_id: int, text: str) -> None:
        with self._lock:
            self._logs[job_id] += text.encode()

    def add_metrics(self, job_id: int, rows: list[dict[str, Any]]) -> None:
        with self._lock:
            self._metrics[job_id].extend(rows)

    def set_outputs(self, job_id: int, files: dict[str, bytes]) -> None:
        """Give a job an output tree made of these files."""
        with self._lock:
            self._outputs[job_id] = dict(files)
            for data in files.values():
                self.blobs[hashlib.sha256(data).hexdigest()] = data
            self._jobs[job_id] = self._jobs[job_id].model_copy(
                update={"output_tree": _tree(files).id})

    def add_tree(self, files: dict[str, bytes]) -> TreeInfo:
        """Store these files as a tree (as a sync would); returns it."""
        tree = _tree(files)
        with self._lock:
            for data in files.values():
                self.blobs[hashlib.sha256(data).hexdigest()] = data
            self.trees[tree.id] = tree
        return tree

    def set_gpu(self, index: int, **fields: Any) -> None:
        with self._lock:
            gpus = list(self.gpu_list.gpus)
            gpus[index] = gpus[index].model_copy(update=fields)
            self.gpu_list = self.gpu_list.model_copy(update={"gpus": gpus})

    def put_user(self, name: str, *, admin: bool = False) -> UserInfo:
        """Register a user (setting the scene; no permission check)."""
        info = UserInfo(name=name, uid=1000 + len(self._users), admin=admin, groups=[],
                        quota=Quota(), created_at=self.now)
        self._users[name] = info
        return info


def _gpu(index: int) -> GpuState:
    return GpuState(index=index, uuid=f"GPU-fake-{index}", name="Fake A100",
                    memory_total=80 * GIB, memory_used=0, memory_free=80 * GIB, utilization=0)


def _tree(files: dict[str, bytes]) -> TreeInfo:
    entries = [TreeEntryModel(path=path, size=len(data), sha256=hashlib.sha256(data).hexdigest())
               for path, data in sorted(files.items())]
    tree_id = hashlib.sha256("".join(e.path + e.sha256 for e in entries).encode()).hexdigest()
    return TreeInfo(id=tree_id, entries=entries, files=len(entries),
                    size=sum(e.size for e in entries))

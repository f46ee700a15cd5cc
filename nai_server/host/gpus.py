"""GPU inventory: NVML through nvidia-ml-py, or a fake one where there is no driver.

Both implement `GpuInventory.probe()`, which returns what is there now: each GPU's
memory, utilisation and the processes using it. Deciding which of those processes
are foreign (not started by the daemon) is the service's job.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Literal, Protocol

from nai_server.config import GpuConfig
from nai_server.core.spec import parse_size


@dataclass(frozen=True)
class GpuProcess:
    pid: int
    used_memory: int  # bytes; 0 when the driver does not say


@dataclass(frozen=True)
class GpuInfo:
    index: int
    uuid: str
    name: str
    memory_total: int
    memory_used: int
    utilization: int  # percent
    processes: tuple[GpuProcess, ...] = ()

    @property
    def memory_free(self) -> int:
        return max(0, self.memory_total - self.memory_used)


@dataclass(frozen=True)
class GpuSnapshot:
    source: Literal["nvml", "fake"]
    gpus: tuple[GpuInfo, ...]
    error: str | None = None  # why NVML was not used, when it was asked for


class GpuInventory(Protocol):
    """Where the daemon learns about GPUs each tick."""

    source: Literal["nvml", "fake"]

    def probe(self) -> GpuSnapshot: ...


@dataclass
class FakeGpuInventory:
    """A configured list of GPUs with no driver behind them (tests, laptops, CI).

    Tests simulate someone bypassing the queue with `add_foreign`.
    """

    specs: list[tuple[str, int]]
    source: Literal["nvml", "fake"] = "fake"
    _foreign: dict[int, list[GpuProcess]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def with_count(cls, count: int, memory: int = 80 << 30) -> FakeGpuInventory:
        return cls([("Fake GPU", memory) for _ in range(count)])

    def add_foreign(self, index: int, pid: int, used_memory: int) -> None:
        with self._lock:
            self._foreign.setdefault(index, []).append(GpuProcess(pid, used_memory))

    def clear_foreign(self) -> None:
        with self._lock:
            self._foreign.clear()

    def probe(self) -> GpuSnapshot:
        with self._lock:
            gpus = tuple(
                GpuInfo(
                    index=i,
                    uuid=f"GPU-fake-{i:04d}",
                    name=name,
                    memory_total=memory,
                    memory_used=sum(p.used_memory for p in self._foreign.get(i, [])),
                    utilization=0,
                    processes=tuple(self._foreign.get(i, [])),
                )
                for i, (name, memory) in enumerate(self.specs)
            )
        return GpuSnapshot("fake", gpus)


class NvmlGpuInventory:
    """The real GPUs, read through NVML (`import pynvml` from nvidia-ml-py)."""

    source: Literal["nvml", "fake"] = "nvml"

    def __init__(self) -> None:
        import pynvml

        self.nvml = pynvml
        pynvml.nvmlInit()  # raises NVMLError_LibraryNotFound without a driver

    def probe(self) -> GpuSnapshot:
        nv = self.nvml
        gpus = []
        for index in range(nv.nvmlDeviceGetCount()):
            handle = nv.nvmlDeviceGetHandleByIndex(index)
            memory = nv.nvmlDeviceGetMemoryInfo(handle)
            try:
                util = int(nv.nvmlDeviceGetUtilizationRates(handle).gpu)
            except nv.NVMLError:
                util = 0
            procs: dict[int, GpuProcess] = {}
            for getter in (nv.nvmlDeviceGetComputeRunningProcesses,
                           nv.nvmlDeviceGetGraphicsRunningProcesses):
                try:
                    for p in getter(handle):
                        used = p.usedGpuMemory if isinstance(p.usedGpuMemory, int) else 0
                        procs[p.pid] = GpuProcess(p.pid, used)
                except nv.NVMLError:
                    pass
            name = nv.nvmlDeviceGetName(handle)
            uuid = nv.nvmlDeviceGetUUID(handle)
            gpus.append(GpuInfo(
                index=index,
                uuid=uuid.decode() if isinstance(uuid, bytes) else uuid,
                name=name.decode() if isinstance(name, bytes) else name,
                memory_total=int(memory.total),
                memory_used=int(memory.used),
                utilization=util,
                processes=tuple(procs.values()),
            ))
        return GpuSnapshot("nvml", tuple(gpus))


def open_inventory(config: GpuConfig) -> tuple[GpuInventory, str | None]:
    """NVML when asked for or available; else the fake inventory. Returns the inventory
    and, when NVML was wanted but failed, why (shown by `nai-server check`)."""
    fake = FakeGpuInventory([(g.name, parse_size(g.memory)) for g in config.fake])
    if config.source == "fake":
        return fake, None
    try:
        return NvmlGpuInventory(), None
    except Exception as exc:  # any NVML failure means: no usable driver here
        reason = f"NVML unavailable: {type(exc).__name__}: {exc}"
        if config.source == "nvml":
            raise RuntimeError(f"gpus.source is 'nvml' but {reason}") from exc
        return fake, reason

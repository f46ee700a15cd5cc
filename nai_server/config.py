"""Server configuration: a YAML file (config.example.yaml documents every key),
overridden by command-line flags, with defaults that depend on the mode."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from nai_server.protocol import Invalid


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FakeGpu(_Section):
    """One GPU of the fake inventory used where no NVIDIA driver is present."""

    name: str = "Fake GPU"
    memory: str | int = "80GiB"


class GpuConfig(_Section):
    source: Literal["auto", "nvml", "fake"] = "auto"
    fake: list[FakeGpu] = Field(default_factory=list)


class SchedulerConfig(_Section):
    policy: str = "fifo"
    tick_seconds: float = Field(default=1.0, gt=0, le=60)
    cpu_slots: int = Field(default=4, ge=0)


class JobsConfig(_Section):
    cancel_grace_seconds: float = Field(default=30.0, ge=0)
    default_time_limit: str | int | None = None
    max_time_limit: str | int | None = None
    archive_after_hours: float = Field(default=24.0, ge=0)


class LimitsConfig(_Section):
    max_file_size: str | int = "64GiB"
    max_tree_entries: int = Field(default=1_000_000, ge=1)
    max_tree_size: str | int = "2TiB"


class ServerConfig(_Section):
    """Everything `nai-server run` needs; see config.example.yaml."""

    mode: Literal["personal", "multi-user"] = "multi-user"
    state_dir: Path | None = None
    socket: Path | None = None
    admins_group: str = "admins"
    gpus: GpuConfig = Field(default_factory=GpuConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    jobs: JobsConfig = Field(default_factory=JobsConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)

    @property
    def personal(self) -> bool:
        return self.mode == "personal"

    def resolved(self) -> ServerConfig:
        """A copy with state_dir and socket filled in from the mode's defaults."""
        state, sock = default_paths(self.mode)
        return self.model_copy(
            update={"state_dir": self.state_dir or state, "socket": self.socket or sock}
        )

    @property
    def state(self) -> Path:
        assert self.state_dir is not None, "call resolved() first"
        return self.state_dir

    @property
    def socket_path(self) -> Path:
        assert self.socket is not None, "call resolved() first"
        return self.socket


def default_paths(mode: str) -> tuple[Path, Path]:
    """State dir and socket: system paths for a multi-user server, XDG paths otherwise."""
    if mode == "multi-user":
        return Path("/var/lib/nai"), Path("/run/nai/nai.sock")
    home = Path.home()
    data = Path(os.environ.get("XDG_DATA_HOME") or home / ".local" / "share")
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    run_dir = Path(runtime) / "nai" if runtime else Path(f"/tmp/nai-{os.getuid()}")
    return data / "nai", run_dir / "nai.sock"


def load_config(path: Path | None, **overrides: Any) -> ServerConfig:
    """Read the YAML file (if any), apply non-None flag overrides, validate."""
    data: dict[str, Any] = {}
    if path is not None:
        try:
            text = path.read_text()
        except OSError as exc:
            raise Invalid(f"cannot read config file {path}: {exc.strerror}") from exc
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise Invalid(f"{path}: not valid YAML: {exc}") from exc
        if loaded is not None and not isinstance(loaded, dict):
            raise Invalid(f"{path}: the top level must be a mapping of keys")
        data = loaded or {}
    fake_gpus = overrides.pop("fake_gpus", None)
    for key, value in overrides.items():
        if value is not None:
            data[key] = value
    if fake_gpus is not None:
        gpus = dict(data.get("gpus") or {})
        gpus["source"] = "fake"
        gpus["fake"] = [{"name": "Fake GPU", "memory": "80GiB"} for _ in range(fake_gpus)]
        data["gpus"] = gpus
    try:
        return ServerConfig.model_validate(data).resolved()
    except ValidationError as exc:
        where = str(path) if path else "config"
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise Invalid(f"{where}: {problems}") from exc


def find_socket(explicit: Path | str | None = None) -> Path:
    """The socket a local tool talks to: --socket, $NAI_SOCKET, the system daemon's
    socket if there is one, else this user's personal daemon."""
    if explicit:
        return Path(explicit)
    if os.environ.get("NAI_SOCKET"):
        return Path(os.environ["NAI_SOCKET"])
    system = default_paths("multi-user")[1]
    if system.exists():
        return system
    return default_paths("personal")[1]

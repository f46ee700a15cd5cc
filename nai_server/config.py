"""Server configuration: a YAML file (config.example.yaml documents every key),
overridden by command-line flags, with defaults that depend on the mode."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from nai_server.core import scheduling as sched
from nai_server.core.units import parse_duration, parse_size
from nai_server.paths import default_paths as default_paths
from nai_server.paths import find_socket as find_socket
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


def _seconds(value: object) -> float:
    """A duration as people write it ("7d", "6h", "5m", "90") or a number of seconds."""
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        return float(parse_duration(value))
    raise ValueError(f"not a duration (use e.g. 7d, 6h, 30m): {value!r}")


Seconds = Annotated[float, BeforeValidator(_seconds)]
_T = sched.Tuning()  # the defaults, chosen on the trace replay, live with the policy


class FairshareConfig(_Section):
    """The fair-share policy's knobs: `core.sched_types.Tuning`, durations as "7d"."""

    half_life: Seconds = Field(default=_T.half_life, gt=0)
    predict: bool = _T.predict
    weight_fairshare: float = Field(default=_T.weight_fairshare, ge=0)
    weight_age: float = Field(default=_T.weight_age, ge=0)
    age_max: Seconds = Field(default=_T.age_max, gt=0)
    weight_length: float = Field(default=_T.weight_length, ge=0)
    weight_width: float = Field(default=_T.weight_width, ge=0)
    weight_qos: float = Field(default=_T.weight_qos, ge=0)
    reserve_window: Seconds = Field(default=_T.reserve_window, ge=0)
    reserve_after: Seconds = Field(default=_T.reserve_after, ge=0)
    reserve_slowdown: float = Field(default=_T.reserve_slowdown, ge=0)
    reserve_near: float = Field(default=_T.reserve_near, ge=0)
    starve_factor: float = Field(default=_T.starve_factor, ge=0)
    tail_guard: float = Field(default=_T.tail_guard, ge=0)
    drain_after: float = Field(default=_T.drain_after, ge=0)
    drain_hold: Seconds = Field(default=_T.drain_hold, ge=0)
    whole_first_rank: float = Field(default=_T.whole_first_rank, ge=0)
    preempt: bool = _T.preempt
    preempt_min_run: Seconds = Field(default=_T.preempt_min_run, ge=0)
    las_threshold: Seconds = Field(default=_T.las_threshold, gt=0)
    las_factor: float = Field(default=_T.las_factor, gt=1)

    def tuning(self) -> sched.Tuning:
        return sched.Tuning(**self.model_dump())


class SchedulerConfig(_Section):
    policy: str = sched.DEFAULT_POLICY
    tick_seconds: float = Field(default=1.0, gt=0, le=60)
    cpu_slots: int = Field(default=4, ge=0)
    fairshare: FairshareConfig = Field(default_factory=FairshareConfig)

    @field_validator("policy")
    @classmethod
    def _known_policy(cls, value: str) -> str:
        if value not in sched.POLICIES:
            raise ValueError(
                f"unknown scheduling policy {value!r}; use one of: {', '.join(sched.POLICIES)}"
            )
        return value


def _bytes(value: object) -> int | None:
    """A size as people write it ("64G", "512MiB") or a number of bytes; None: none."""
    if value is None:
        return None
    try:
        size = parse_size(value)  # type: ignore[arg-type]
    except (ValueError, OverflowError):
        size = 0
    if size <= 0:
        raise ValueError(f"not a size (use e.g. 64GiB, 512MiB, 16G): {value!r}")
    return size


Bytes = Annotated[int | None, BeforeValidator(_bytes)]


class JobsConfig(_Section):
    cancel_grace_seconds: float = Field(default=30.0, ge=0)
    default_time_limit: str | int | None = None
    max_time_limit: str | int | None = None
    # A job's memory and CPU limits (its cgroup's) when its spec names none, and the
    # most a spec may ask; None: no limit.
    default_memory: Bytes = None
    max_memory: Bytes = None
    default_cpus: float | None = Field(default=None, ge=0.01)
    max_cpus: float | None = Field(default=None, ge=0.01)
    archive_after_hours: float = Field(default=24.0, ge=0)
    # A job's output/ is read as its owner and stored when it ends, within these caps.
    max_output_file_size: str | int = "16GiB"
    max_output_size: str | int = "64GiB"
    max_output_entries: int = Field(default=100_000, ge=1)
    collect_timeout_seconds: float = Field(default=3600.0, gt=0)
    # Jobs one user may have queued or running at once (submits beyond are refused);
    # None: no cap. Bounds what a runaway submit loop costs every tick and listing.
    max_active_per_user: int | None = Field(default=10_000, ge=1)


class LimitsConfig(_Section):
    max_file_size: str | int = "64GiB"
    max_tree_entries: int = Field(default=1_000_000, ge=1)
    max_tree_size: str | int = "2TiB"
    # Connections to the API socket (root's and the daemon's own uid are not capped).
    connections_per_user: int = Field(default=64, ge=1, le=1_000_000)
    max_connections: int = Field(default=4096, ge=1, le=1_000_000)
    header_timeout: Seconds = Field(default=30.0, gt=0, le=86_400)
    idle_timeout: Seconds = Field(default=3600.0, gt=0, le=7 * 86_400)
    keepalive_timeout: Seconds = Field(default=5.0, gt=0, le=86_400)
    # Below this much free space in the state dir, uploads are refused (507) and
    # `nai-server check` warns; running jobs go on. 0 turns it off.
    min_free_space: str | int = "1GiB"
    # `nai-admin store verify` re-reads every blob at most this fast (MiB per second),
    # so that jobs reading their data keep the disk. 0: as fast as the disk goes.
    verify_mib_per_s: float = Field(default=100.0, ge=0, le=1_000_000)


class PluginConfig(_Section):
    """One plugin's `plugins.NAME` section. An installed plugin runs only once named
    here (a `plugins.NAME: {}` section enables it with the defaults)."""

    enabled: bool = True
    # A submit rule that raises or times out lets the submit go on, unless required.
    required: bool = False
    timeout: Seconds = Field(default=2.0, gt=0, le=60)
    options: dict[str, Any] = Field(default_factory=dict)


class SlurmConfig(_Section):
    """`launcher: slurm`: how the daemon hands jobs to a Slurm cluster (docs/slurm.md)."""

    # SLURM_CONF for sbatch, squeue, sacct and scancel; None: Slurm's own default.
    conf: Path | None = None
    partition: str | None = None  # when a job names none; None: the cluster's default
    accounts: dict[str, str] = Field(default_factory=dict)  # nai group -> Slurm account
    sbatch_args: list[str] = Field(default_factory=list)  # added to every sbatch
    # Where ended jobs are read once squeue forgets them: slurmdbd (`sacct`), or the
    # completion log of a cluster without one (`sacct -c`, JobCompType=jobcomp/filetxt).
    accounting: Literal["database", "jobcomp"] = "database"
    poll_seconds: Seconds = Field(default=1.0, gt=0, le=300)  # squeue at most this often
    command_timeout: Seconds = Field(default=30.0, gt=0, le=600)
class GatewayConfig(_Section):
    """`services.gateway`: services on TCP with bearer tokens; off unless `listen` is set."""

    listen: str | None = None  # e.g. "0.0.0.0:8800"
    allow_public: bool = False  # services marked public answer without a token


class ServicesConfig(_Section):
    """How the daemon watches service replicas (see app/service_life.py)."""

    probe_seconds: Seconds = Field(default=0.5, gt=0, le=60)
    probe_timeout: Seconds = Field(default=2.0, gt=0, le=60)
    start_timeout: Seconds = Field(default=300.0, gt=0)  # never ready in this long: restart
    unhealthy_seconds: Seconds = Field(default=10.0, ge=0)  # unhealthy this long: restart
    max_restarts: int = Field(default=5, ge=1)  # in restart_window: the service fails
    restart_window: Seconds = Field(default=600.0, gt=0)
    stop_grace_seconds: float = Field(default=5.0, ge=0)
    invoke_wait: Seconds = Field(default=10.0, ge=0)  # for a ready replica, then 503
    request_timeout: Seconds = Field(default=300.0, gt=0)  # for a replica's answer
    max_services_per_user: int = Field(default=20, ge=1)  # running (not stopped/failed)
    max_tokens_per_service: int = Field(default=20, ge=1)
    max_replicas_per_user: int = Field(default=16, ge=1)  # of their running services, in all
    keep_stopped: int = Field(default=10, ge=0)  # per user: older stopped ones are removed
    keep_stopped_seconds: Seconds = Field(default=7 * 86400, ge=0)  # and any older than this
    gateway: GatewayConfig = Field(default_factory=GatewayConfig)


class RegistryConfig(_Section):
    """Bounds on what one user keeps in the registries (datasets and models), whose
    entries live in the hot database: each one adds to every registry write's cost (the
    whole state file is rewritten), so a runaway script must not grow them without end.
    None: no cap."""

    # Datasets and models a user created, together (a group's count against its creator).
    max_entries_per_user: int | None = Field(default=1000, ge=1)
    # Versions one dataset or model holds (those marked for deletion until they go).
    max_versions_per_entry: int | None = Field(default=10_000, ge=1)


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
    plugins: dict[str, PluginConfig] = Field(default_factory=dict)
    # local: jobs run on this host, scheduled by nai; slurm: handed to Slurm (DESIGN §10).
    launcher: Literal["local", "slurm"] = "local"
    slurm: SlurmConfig = Field(default_factory=SlurmConfig)
    services: ServicesConfig = Field(default_factory=ServicesConfig)
    registry: RegistryConfig = Field(default_factory=RegistryConfig)

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

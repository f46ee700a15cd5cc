"""Services' decisions as pure functions: who may see or change one, what a model's
`serve:` section says, a service's state from its replicas', and when a replica that
keeps dying makes its service fail.

A service document (see store/service_records.py) has `owner` ({"user": U} or
{"group": G}), `user` (who created it; its replicas run as them) and `visibility`:
"private" (its writers only), "group" (also the members of the owning group, or of
the owner user's groups) or "shared" (every user of the server).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from nai_server.core.processing import unsaved
from nai_server.core.spec_fields import cpu_limit, memory_limit
from nai_server.core.states import SERVICE_TERMINAL, ServiceState
from nai_server.core.units import parse_size

# A replica that exits with this status (sysexits' EX_CONFIG) says that starting it again
# cannot help (a wrong option): its service fails at once, as systemd's
# RestartPreventExitStatus does, rather than be restarted until too many failures.
NO_RESTART = 78

DEFAULT_COMMAND = "python -m nai_server.serving.replica"
DEFAULT_HEALTH = "/health"
# Best first: a service is as good as its best replica.
_RANK = (ServiceState.READY, ServiceState.UNHEALTHY, ServiceState.STARTING,
         ServiceState.PENDING, ServiceState.FAILED, ServiceState.STOPPED)


class Principal(Protocol):
    @property
    def user(self) -> str: ...

    @property
    def admin(self) -> bool: ...

    @property
    def groups(self) -> tuple[str, ...]: ...


class ServeError(ValueError):
    """A `serve:` section that cannot be used; the message says why."""


def may_write(who: Principal, doc: Mapping[str, Any]) -> bool:
    """Update, scale, stop, manage tokens: the owner user, the owning group's members,
    admins."""
    owner = doc["owner"]
    return (who.admin or owner.get("user") == who.user
            or ("group" in owner and owner["group"] in who.groups))


def may_read(who: Principal, doc: Mapping[str, Any], owner_groups: Collection[str] = ()
             ) -> bool:
    """See and invoke. `owner_groups`: the groups of the owner user (for "group")."""
    visibility = doc.get("visibility", "private")
    if visibility == "shared" or may_write(who, doc):
        return True
    if visibility == "group":
        owner = doc["owner"]
        groups = {owner["group"]} if "group" in owner else set(owner_groups)
        return any(g in groups for g in who.groups)
    return False


def owner_label(doc: Mapping[str, Any]) -> str:
    owner = doc["owner"]
    return f"group {owner['group']}" if "group" in owner else f"user {owner['user']}"


def writers(doc: Mapping[str, Any]) -> str:
    owner = doc["owner"]
    if "group" in owner:
        return f"members of group {owner['group']} and admins"
    return f"{owner['user']} and admins"


@dataclass(frozen=True)
class Serve:
    """A model version's `serve:` section (its nai.yaml), or the defaults."""

    command: str = DEFAULT_COMMAND
    health: str = DEFAULT_HEALTH
    gpus: int | None = None
    gpu_memory: int | None = None  # bytes free on each GPU, or the replica waits
    memory: int | None = None  # each replica's cgroup limits, as a job's
    cpus: float | None = None
    replicas: int | None = None
    idle_timeout: float | None = None
    max_batch: int | None = None
    max_wait_ms: float | None = None


def parse_serve(raw: object) -> Serve:
    """The `serve:` mapping of a nai.yaml (None: none, the zero-code default)."""
    if raw is None:
        return Serve()
    if not isinstance(raw, dict):
        raise ServeError("serve: must be a mapping (command, health, gpus, replicas, ...)")
    known = {"command", "health", "gpus", "gpu_memory", "replicas", "idle_timeout",
             "max_batch", "max_wait_ms", "port", "memory", "cpus"}
    unknown = sorted(str(k) for k in raw if k not in known)
    if unknown:
        raise ServeError(f"serve: unknown key(s) {', '.join(unknown)}; known: "
                         f"{', '.join(sorted(known))}")
    command = raw.get("command", DEFAULT_COMMAND)
    if not isinstance(command, str) or not command.strip() or len(command) > 4096:
        raise ServeError("serve.command must be a shell command (a non-empty string)")
    health = raw.get("health", DEFAULT_HEALTH)
    if not isinstance(health, str) or not health.startswith("/") or len(health) > 512 or any(
            c.isspace() or ord(c) < 32 for c in health):
        raise ServeError("serve.health must be a path such as /health")
    return Serve(command=command, health=health,
                 gpus=_count(raw, "gpus", 64), gpu_memory=_size(raw, "gpu_memory"),
                 memory=_limit(raw, "memory", memory_limit),
                 cpus=_limit(raw, "cpus", cpu_limit),
                 replicas=_count(raw, "replicas", 64),
                 idle_timeout=_number(raw, "idle_timeout"),
                 max_batch=_count(raw, "max_batch", 4096),
                 max_wait_ms=_number(raw, "max_wait_ms"))


def _count(raw: Mapping[str, Any], key: str, most: int) -> int | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= most:
        raise ServeError(f"serve.{key} must be a whole number from 0 to {most}")
    return value


def _size(raw: Mapping[str, Any], key: str) -> int | None:
    value = raw.get(key)
    if value is None:
        return None
    try:
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ValueError(value)
        return parse_size(value)
    except ValueError as exc:
        raise ServeError(f"serve.{key} must be a size such as 8G or 512M") from exc


def _limit(raw: Mapping[str, Any], key: str, check: Callable[[Any], Any]) -> Any:
    """A replica's memory or CPU limit, within a job's bounds (core.spec_fields): 0,
    NaN or a size no process starts in would leave the replica unlimited or never up."""
    value = raw.get(key)
    if value is None:
        return None
    try:
        return check(value)
    except ValueError as exc:
        raise ServeError(f"serve.{key} {exc}") from exc


def _number(raw: Mapping[str, Any], key: str, what: str = "a number of seconds"
            ) -> float | None:
    value = raw.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ServeError(f"serve.{key} must be {what} (0 or more)")
    return float(value)


def service_state(replicas: Iterable[str]) -> ServiceState:
    """A live service's state: its best replica's; pending with none (scaled to zero)."""
    states = {ServiceState(s) for s in replicas}
    if not states:
        return ServiceState.PENDING
    return next(s for s in _RANK if s in states)


def backoff(restarts: int) -> float:
    """Seconds before restarting a replica that died `restarts` times: 0.5s doubling,
    at most 30s."""
    return min(30.0, 0.5 * 2.0 ** max(0, restarts - 1))


def too_many_failures(failures: Iterable[float], now: float, window: float,
                      limit: int) -> bool:
    """Whether a service failed `limit` times or more within the last `window` seconds."""
    return sum(1 for t in failures if now - t <= window) >= limit


def expired(docs: Iterable[Mapping[str, Any]], now: float, keep: int,
            max_age: float) -> list[str]:
    """The stopped or failed services (with no replica left) to remove: past the `keep`
    newest of each user, or older than `max_age` seconds (an annotate session once its
    labels are saved)."""
    done: dict[str, list[Mapping[str, Any]]] = {}
    for doc in docs:
        if doc["state"] in SERVICE_TERMINAL and not doc["replica_docs"] and not unsaved(doc):
            done.setdefault(doc["user"], []).append(doc)
    gone = []
    for mine in done.values():
        mine.sort(key=lambda d: (d["updated_at"], d["number"]), reverse=True)
        gone += [d["name"] for i, d in enumerate(mine)
                 if i >= keep or now - d["updated_at"] > max_age]
    return sorted(gone)


# --- replicas in a service's document ------------------------------------------------


def live(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The replicas that are not on their way out."""
    return [r for r in doc["replica_docs"] if not r.get("stopping")]


def replica_dir(doc: Mapping[str, Any], replica: Mapping[str, Any]) -> str:
    """The name of a replica run's directory: service number and run number."""
    return f"{doc['number']}.{replica['run']}"


def handle_pid(handle: str | None) -> int | None:
    """The pid in a replica's handle when it is a process of this host ("PID:START";
    what `nai service show` prints), else None ("slurm:ID")."""
    pid, sep, _ = (handle or "").partition(":")
    return int(pid) if sep and pid.isdigit() else None


def new_replica(doc: dict[str, Any]) -> dict[str, Any]:
    """A replica of the service's current version, waiting for GPUs, at the lowest free
    index; added to the document."""
    used = {r["index"] for r in live(doc)}
    index = next(i for i in range(len(used) + 1) if i not in used)
    r = {"index": index, "run": 0, "state": str(ServiceState.PENDING), "gpus": [],
         "gpus_wanted": doc["gpus"], "model": doc["model"], "tree_id": doc["tree_id"],
         "command": doc["command"], "health": doc["health"], "memory": doc.get("memory"),
         "cpus": doc.get("cpus"), "handle": None,
         "started_at": None, "ready_at": None, "restarts": 0,
         "message": None}
    doc["replica_docs"].append(r)
    return r

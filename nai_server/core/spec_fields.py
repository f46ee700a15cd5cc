"""The job spec's fields, one validator each: raw value -> clean value, or ValueError.

The error's text says what is wrong and what a valid value looks like; core.spec adds the
source, the line and the field. Pure: no I/O. The bounds (DESIGN §11) live here, beside the
checks that enforce them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from nai_server.core.bounds import MAX_ID, has_surrogate, shown
from nai_server.core.env_setup import parse_env_setup
from nai_server.core.metric_patterns import parse_metrics
from nai_server.core.metric_summary import parse_metric_choice
from nai_server.core.units import parse_duration, parse_size

PRIORITIES = ("low", "normal", "high")
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
TAG_RE = re.compile(r"[A-Za-z][A-Za-z0-9._-]{0,63}")  # as the registries' tags
_ENV_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# nai sets these itself (core.env); letting a job override them would break GPU isolation.
_RESERVED_ENV = frozenset({"CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER"})
# The NAI_ variables a spec may set itself: `nai submit --array` gives each element its
# index this way. nai sets none of them, so a job that sets one escapes nothing.
SPEC_NAI_ENV = frozenset({"NAI_ARRAY_INDEX"})

# Bounds (DESIGN §11): every number is checked here, before anything stores it.
MAX_GPUS = 1024
MAX_GPU_MEMORY = 2**50  # 1 PiB
MIN_GPU_MEMORY = 2**20  # 1 MiB: less is a bare number meant in another unit
MIN_MEMORY = 16 * 2**20  # a job's memory limit: below this not even its shell starts
MAX_MEMORY = 2**50  # 1 PiB
MAX_CPUS = 65536
MAX_NODES = 1024
CPU_STEP = 0.01  # the finest CPU limit a cgroup takes (1 ms of every 100 ms)
MAX_TIME_LIMIT = 366 * 86400  # a year and a day
MAX_COMMAND_CHARS = 64 * 1024  # one argument of sh -c: the kernel takes at most 128 KiB
MAX_DEPENDENCIES = 1000  # ids in after plus after_ok
MAX_ENV_VARS = 256
MAX_ENV_KEY = 256
MAX_ENV_VALUE = 32 * 1024
MAX_ENV_TOTAL = 128 * 1024


def parse_ref(value: str) -> tuple[str, int | None]:
    """Split ``name[@version]`` into (name, version); version None means the latest."""
    name, _, version = value.partition("@")
    latest = version in ("", "latest") and not value.endswith("@")
    if not NAME_RE.fullmatch(name) or not (latest or (version.isdigit() and int(version) > 0)):
        raise ValueError(
            f"must be name or name@version (a version number or 'latest'), e.g. cifar10@2, "
            f"got {shown(value)}"
        )
    number = None if latest else int(version)
    if number is not None and number > MAX_ID:
        raise ValueError(f"version {shown(version)} is out of range (at most {MAX_ID})")
    return name, number


def _optional(check: Callable[[Any], Any]) -> Callable[[object], Any]:
    return lambda value: None if value is None else check(value)


def _name(value: object) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # YAML reads a purely numeric name as an int
    if not isinstance(value, str) or not NAME_RE.fullmatch(value):
        raise ValueError(
            "must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or "
            f"digit, got {shown(value)}"
        )
    return value


def _command(value: object) -> str:
    if not isinstance(value, str) or not value.strip() or "\0" in value or has_surrogate(value):
        raise ValueError(f"must be a shell command line, e.g. 'python train.py', "
                         f"got {shown(value)}")
    if len(value) > MAX_COMMAND_CHARS:
        raise ValueError(f"is {len(value)} characters long, the limit is {MAX_COMMAND_CHARS}; "
                         "put a long command in a script and run that")
    return value


def _gpus(value: object) -> int:
    if isinstance(value, str) and value.strip().isdigit() and len(value) <= 20:
        value = int(value)  # from a command-line flag
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_GPUS:
        raise ValueError(f"must be a whole number from 0 to {MAX_GPUS} (0 = CPU-only job), "
                         f"got {shown(value)}")
    return value


def _gpu_memory(value: Any) -> int:
    try:
        size = parse_size(value)
    except (ValueError, OverflowError):  # OverflowError: a number too big for a float
        size = 0
    if size <= 0:
        raise ValueError(f"must be a size like 10GiB, 512MiB or 16G, got {shown(value)}")
    if size < MIN_GPU_MEMORY:  # `gpu_memory: 40` meant 40G, not 40 bytes
        raise ValueError(f"must be a size like 10GiB, 512MiB or 16G; {shown(value)} is "
                         f"{size} bytes (a bare number counts bytes)")
    if size > MAX_GPU_MEMORY:
        raise ValueError(f"must be at most 1PiB (no GPU has more), got {shown(value)}")
    return size


def memory_limit(value: Any) -> int:
    """A memory limit (a job's, a service replica's): from 16MiB to 1PiB."""
    try:
        size = parse_size(value)
    except (ValueError, OverflowError):
        size = -1
    if size < 0:
        raise ValueError(f"must be a size like 16G, 512MiB or 64GiB, got {shown(value)}")
    if not MIN_MEMORY <= size <= MAX_MEMORY:
        raise ValueError(f"must be from 16MiB to 1PiB, got {shown(value)}")
    return size


def cpu_limit(value: Any) -> float:
    """A CPU limit (a job's, a service replica's): finite, from 0.01 to 65536."""
    number: float | None = None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str) and len(value) <= 20:
        try:
            number = float(value)
        except ValueError:
            number = None
    if number is None or not CPU_STEP <= number <= MAX_CPUS:  # NaN fails both
        raise ValueError(f"must be a number of CPUs from {CPU_STEP} to {MAX_CPUS}, e.g. 4 or "
                         f"0.5, got {shown(value)}")
    return round(number, 2)


def _time_limit(value: Any) -> int:
    try:
        seconds = parse_duration(value)
    except (ValueError, OverflowError):  # OverflowError: a number too big for a float
        seconds = 0
    if seconds <= 0:
        raise ValueError(f"must be a duration like 2h, 30m, 1h30m, 1d or 01:30:00, "
                         f"got {shown(value)}")
    if seconds > MAX_TIME_LIMIT:
        raise ValueError(f"must be at most 366d, got {shown(value)}")
    return seconds


def _ref(value: object) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # as in _name
    if not isinstance(value, str):
        raise ValueError(f"must be name or name@version, e.g. cifar10@2, got {shown(value)}")
    name, _, selector = value.partition("@")
    if NAME_RE.fullmatch(name) and TAG_RE.fullmatch(selector):
        return value  # name@tag (e.g. cifar10@best): the registry resolves it at submit
    parse_ref(value)
    return value


def _env(value: object) -> dict[str, str]:
    if value is None:
        return {}  # "env:" with every line commented out
    if not isinstance(value, Mapping):
        raise ValueError(f"must be a mapping of NAME: value, e.g. {{SEED: '1'}}, "
                         f"got {shown(value)}")
    if len(value) > MAX_ENV_VARS:
        raise ValueError(f"has {len(value)} variables, the limit is {MAX_ENV_VARS}")
    env: dict[str, str] = {}
    total = 0
    for key, raw in value.items():
        if (not isinstance(key, str) or len(key) > MAX_ENV_KEY
                or not _ENV_KEY_RE.fullmatch(key)):
            raise ValueError(
                f"{shown(key)} is not a valid variable name (up to {MAX_ENV_KEY} letters, "
                "digits and '_', not starting with a digit)"
            )
        if (key.startswith("NAI_") and key not in SPEC_NAI_ENV) or key in _RESERVED_ENV:
            raise ValueError(f"{key} is set by nai for every job; remove it or rename it")
        if isinstance(raw, bool):
            raw = "true" if raw else "false"  # YAML's yes/on/true, spelled the usual way
        elif isinstance(raw, (int, float)):
            raw = str(raw)
        if not isinstance(raw, str) or "\0" in raw or has_surrogate(raw):
            raise ValueError(f'{key} must be a string, number or boolean; quote it: {key}: "..."')
        if len(raw) > MAX_ENV_VALUE:
            raise ValueError(f"{key} is {len(raw)} characters long, the limit is {MAX_ENV_VALUE}")
        total += len(key) + len(raw)
        if total > MAX_ENV_TOTAL:
            raise ValueError(f"the variables add up to more than {MAX_ENV_TOTAL} characters; "
                             "pass large data in a file instead")
        env[key] = raw
    return env


def _priority(value: object) -> str:
    if value not in PRIORITIES:
        raise ValueError(f"must be one of {', '.join(PRIORITIES)}, got {shown(value)}")
    return str(value)


def _job_ids(value: object) -> tuple[int, ...]:
    items: Iterable[object]
    if value is None:
        items = ()
    elif isinstance(value, str):
        items = [part.strip() for part in value.split(",") if part.strip()]  # "12,13"
    else:
        items = value if isinstance(value, (list, tuple)) else [value]
    if len(items) > MAX_DEPENDENCIES:
        raise ValueError(f"names more than {MAX_DEPENDENCIES} jobs")
    ids: list[int] = []
    for item in items:
        if isinstance(item, str) and item.isdigit() and len(item) <= 20:
            item = int(item)
        if isinstance(item, bool) or not isinstance(item, int) or not 0 < item <= MAX_ID:
            raise ValueError(f"must be a job id or a list of job ids, e.g. [12, 13], "
                             f"got {shown(value)}")
        if item not in ids:
            ids.append(item)
    return tuple(ids)


def _count(most: int) -> Callable[[object], int]:
    def check(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= most:
            raise ValueError(f"must be a whole number from 1 to {most}, got {shown(value)}")
        return value
    return check


def _code(value: object) -> str:
    if value not in ("linked", "writable"):
        raise ValueError(f"must be linked (the default: the code's files are read-only, "
                         f"shared with the upload) or writable (a private copy the job may "
                         f"change), got {shown(value)}")
    return str(value)


def _bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, got {shown(value)}")
    return value


# One entry per field of core.spec's JobSpec, under the same name.
VALIDATORS: dict[str, Callable[[Any], Any]] = {
    "command": _command,
    "name": lambda value: "" if value == "" else _name(value),
    "gpus": _gpus,
    "gpu_memory": _optional(_gpu_memory),
    "memory": _optional(memory_limit),
    "cpus": _optional(cpu_limit),
    "dataset": _optional(_ref),
    "model": _optional(_ref),
    "env": _env,
    "time_limit": _optional(_time_limit),
    "priority": _priority,
    "register_model": _optional(_name),
    "register_dataset": _optional(_name),
    "after": _job_ids,
    "after_ok": _job_ids,
    "preemptible": _bool,
    "group": _optional(_name),
    "metrics": _optional(parse_metrics),
    "env_setup": _optional(parse_env_setup),
    "partition": _optional(_name),
    "account": _optional(_name),
    "qos": _optional(_name),
    "nodes": _count(MAX_NODES),
    "cpus_per_gpu": _optional(_count(MAX_CPUS)),
    "code": _code,
    "register_metric": _optional(parse_metric_choice),
}


def env_pairs(value: object) -> object:
    """``--env`` values: a mapping, or ``KEY=VALUE`` strings turned into one."""
    if isinstance(value, Mapping):
        return value
    if not isinstance(value, (str, list, tuple)):
        raise ValueError(f"must be KEY=VALUE strings, e.g. SEED=1, got {shown(value)}")
    pairs: dict[str, str] = {}
    for item in [value] if isinstance(value, str) else value:
        if not isinstance(item, str) or "=" not in item:
            raise ValueError(f"must be KEY=VALUE, e.g. SEED=1, got {shown(item)}")
        key, _, val = item.partition("=")
        pairs[key] = val
    return pairs

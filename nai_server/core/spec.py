"""The job spec (``nai.yaml``): parse, validate, override and serialise it.

Pure: it parses a string and never reads a file. Every problem is a SpecError that names
the source, the line and the field, and says what a valid value looks like.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from nai_server.core.bounds import MAX_ID, has_surrogate, shown
from nai_server.core.env_setup import EnvSetup, parse_env_setup
from nai_server.core.metric_patterns import parse_metrics

# Re-exported (`as`): callers import the unit helpers from here with the spec.
from nai_server.core.units import format_duration as format_duration
from nai_server.core.units import format_size as format_size
from nai_server.core.units import parse_duration as parse_duration
from nai_server.core.units import parse_size as parse_size

PRIORITIES = ("low", "normal", "high")
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
TAG_RE = re.compile(r"[A-Za-z][A-Za-z0-9._-]{0,63}")  # as the registries' tags
_ENV_KEY_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# nai sets these itself (core.env); letting a job override them would break GPU isolation.
_RESERVED_ENV = frozenset({"CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER"})

# Bounds (DESIGN §11): every number is checked here, before anything stores it.
MAX_SPEC_CHARS = 64 * 1024  # the text of a nai.yaml
MAX_SPEC_DEPTH = 16  # nesting of its YAML (a spec needs 2: env's mapping, after's list)
MAX_GPUS = 1024
MAX_GPU_MEMORY = 2**50  # 1 PiB
MIN_MEMORY = 16 * 2**20  # a job's memory limit: below this not even its shell starts
MAX_MEMORY = 2**50  # 1 PiB
MAX_CPUS = 65536
CPU_STEP = 0.01  # the finest CPU limit a cgroup takes (1 ms of every 100 ms)
MAX_TIME_LIMIT = 366 * 86400  # a year and a day
MAX_COMMAND_CHARS = 64 * 1024  # one argument of sh -c: the kernel takes at most 128 KiB
MAX_DEPENDENCIES = 1000  # ids in after plus after_ok
MAX_ENV_VARS = 256
MAX_ENV_KEY = 256
MAX_ENV_VALUE = 32 * 1024
MAX_ENV_TOTAL = 128 * 1024


@dataclass(frozen=True, kw_only=True)
class JobSpec:
    """A validated job request: what to run and what it needs."""

    command: str  # run with /bin/sh -c
    name: str = ""
    gpus: int = 1  # whole GPUs; 0 = CPU-only job
    gpu_memory: int | None = None  # bytes of free memory needed on each GPU
    memory: int | None = None  # bytes of RAM the job may use (its cgroup's limit)
    cpus: float | None = None  # CPUs' worth of time the job may use (e.g. 4, 0.5)
    dataset: str | None = None  # "name" or "name@version"
    model: str | None = None  # "name" or "name@version"
    env: dict[str, str] = field(default_factory=dict)
    time_limit: int | None = None  # seconds
    priority: str = "normal"
    register_model: str | None = None
    register_dataset: str | None = None  # on success, outputs → a version of this dataset
    after: tuple[int, ...] = ()  # start after these jobs finish, however they end
    after_ok: tuple[int, ...] = ()  # start after these jobs succeed
    preemptible: bool = False
    group: str | None = None  # submit on behalf of this group
    metrics: dict[str, Any] | None = None  # log patterns and presets (core.metric_patterns)
    # None: /bin/sh and the daemon's PATH; login, {conda: NAME} or {venv: PATH} (core.env_setup)
    env_setup: EnvSetup | None = None


FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(JobSpec))


class SpecError(ValueError):
    """An invalid job spec; ``str()`` reads ``source:line: field: what is wrong``."""

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        line: int | None = None,
        source: str = "nai.yaml",
    ) -> None:
        self.message, self.field, self.line, self.source = message, field, line, source
        where = f"{source}:{line}" if line is not None else source
        super().__init__(f"{where}: {field + ': ' if field else ''}{message}")


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


# ---- one validator per field: raw value -> clean value, or ValueError(what is wrong) ----


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
    if size > MAX_GPU_MEMORY:
        raise ValueError(f"must be at most 1PiB (no GPU has more), got {shown(value)}")
    return size


def _memory(value: Any) -> int:
    try:
        size = parse_size(value)
    except (ValueError, OverflowError):
        size = 0
    if size <= 0:
        raise ValueError(f"must be a size like 16G, 512MiB or 64GiB, got {shown(value)}")
    if not MIN_MEMORY <= size <= MAX_MEMORY:
        raise ValueError(f"must be from 16MiB to 1PiB, got {shown(value)}")
    return size


def _cpus(value: Any) -> float:
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
        if key.startswith("NAI_") or key in _RESERVED_ENV:
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


def _bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"must be true or false, got {shown(value)}")
    return value


_VALIDATORS: dict[str, Callable[[Any], Any]] = {
    "command": _command,
    "name": lambda value: "" if value == "" else _name(value),
    "gpus": _gpus,
    "gpu_memory": _optional(_gpu_memory),
    "memory": _optional(_memory),
    "cpus": _optional(_cpus),
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
}


def _unknown_key(key: object, line: int | None, source: str) -> SpecError:
    name = shown(key).strip("'")
    close = difflib.get_close_matches(name, FIELDS, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return SpecError(
        f"unknown key {shown(key)}; {hint}allowed keys: {', '.join(FIELDS)}",
        field=name,
        line=line,
        source=source,
    )


def _build(items: Iterable[tuple[object, object, int | None]], source: str) -> JobSpec:
    """Validate (key, value, line) triples into a JobSpec; the first problem is raised."""
    values: dict[str, Any] = {}
    lines: dict[str, int | None] = {}
    for key, raw, line in items:
        if not isinstance(key, str) or key not in _VALIDATORS:
            raise _unknown_key(key, line, source)
        if key in values:
            first = f" (first on line {lines[key]})" if lines[key] is not None else ""
            raise SpecError(f"given twice{first}; keep one", field=key, line=line, source=source)
        try:
            values[key] = _VALIDATORS[key](raw)
        except ValueError as exc:
            raise SpecError(str(exc), field=key, line=line, source=source) from None
        lines[key] = line
    if "command" not in values:
        raise SpecError(
            "is required: the shell command that starts the job, e.g. command: python train.py",
            field="command",
            source=source,
        )
    return JobSpec(**values)


class _SpecLoader(yaml.SafeLoader):
    """PyYAML's safe loader without anchors and aliases, and with bounded nesting.

    An alias is a reference: ten nested lists of ten aliases each (a few hundred
    bytes, "billion laughs") are a billion items to whatever walks the value, such as
    the repr in an error message. A spec never needs them."""

    depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        line = event.start_mark.line + 1 if event.start_mark is not None else None
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise SpecError("YAML anchors/aliases (&name, *name) are not allowed in nai.yaml; "
                            "write the value out in full", line=line)
        if self.depth >= MAX_SPEC_DEPTH:
            raise SpecError(f"is nested more than {MAX_SPEC_DEPTH} levels deep", line=line)
        self.depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _not_yaml(exc: yaml.YAMLError, source: str) -> SpecError:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    if isinstance(exc, yaml.reader.ReaderError):
        problem = (f"character {exc.position + 1} is a control character "
                   f"(#x{exc.character:02x}), which YAML does not allow")
    else:
        problem = str(getattr(exc, "problem", None) or exc)
    problem = problem if len(problem) <= 200 else problem[:199] + "…"
    return SpecError(f"is not valid YAML: {problem}; check the quoting and indentation",
                     line=mark.line + 1 if mark is not None else None, source=source)


def parse_spec(text: str, source: str = "nai.yaml") -> JobSpec:
    """Parse and validate the text of a ``nai.yaml``; raise SpecError on any problem."""
    if not isinstance(text, str):
        raise SpecError("must be the text of a nai.yaml", source=source)
    if len(text) > MAX_SPEC_CHARS:
        raise SpecError(f"is {len(text)} characters long, the limit is {MAX_SPEC_CHARS}; "
                        "a job spec needs a few lines", source=source)
    if has_surrogate(text):
        raise SpecError("is not valid UTF-8 text (it holds a lone surrogate)", source=source)
    # Compose to nodes rather than yaml.safe_load, so each key keeps its line number.
    try:
        # The reader refuses control characters as it is made, before any parsing.
        loader = _SpecLoader(text)
    except yaml.YAMLError as exc:
        raise _not_yaml(exc, source) from None
    try:
        node = loader.get_single_node()
        if node is None:
            raise SpecError("is empty; write at least: command: python train.py", source=source)
        if not isinstance(node, yaml.MappingNode):
            raise SpecError(
                "must be a mapping of key: value lines, e.g. command: python train.py",
                line=node.start_mark.line + 1,
                source=source,
            )
        items = [
            (
                loader.construct_object(key_node, deep=True),
                loader.construct_object(value_node, deep=True),
                key_node.start_mark.line + 1,
            )
            for key_node, value_node in node.value
        ]
    except SpecError as exc:
        raise SpecError(exc.message, field=exc.field, line=exc.line, source=source) from None
    except yaml.YAMLError as exc:
        raise _not_yaml(exc, source) from None
    except (ValueError, OverflowError) as exc:  # e.g. an int of more than 4300 digits
        raise SpecError(f"holds a value YAML cannot read ({shown(str(exc))})",
                        source=source) from None
    finally:
        loader.dispose()
    return _build(items, source)


def spec_from_dict(data: Mapping[str, object], source: str = "request") -> JobSpec:
    """Validate a spec given as a mapping (an API request body) into a JobSpec."""
    if not isinstance(data, Mapping):
        raise SpecError("must be a JSON object with at least a command", source=source)
    return _build(((key, value, None) for key, value in data.items()), source)


def spec_to_dict(spec: JobSpec) -> dict[str, Any]:
    """The spec as JSON-able data; ``spec_from_dict(spec_to_dict(s)) == s``."""
    data = dataclasses.asdict(spec)
    data["after"], data["after_ok"] = list(spec.after), list(spec.after_ok)
    return data


def _env_pairs(value: object) -> object:
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


def apply_overrides(spec: JobSpec, *, source: str = "command line", **overrides: object) -> JobSpec:
    """Return ``spec`` with the given fields replaced; a None value means "not given".

    ``env`` (a mapping or ``KEY=VALUE`` strings) is merged into the spec's env rather than
    replacing it: a flag usually adds one variable to those in nai.yaml.
    """
    changes: dict[str, Any] = {}
    for key, raw in overrides.items():
        if key not in _VALIDATORS:
            raise _unknown_key(key, None, source)
        if raw is None:
            continue
        try:
            if key == "env":
                changes[key] = {**spec.env, **_env(_env_pairs(raw))}
            else:
                changes[key] = _VALIDATORS[key](raw)
        except ValueError as exc:
            raise SpecError(str(exc), field=key, source=source) from None
    return dataclasses.replace(spec, **changes)

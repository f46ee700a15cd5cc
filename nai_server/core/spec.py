"""The job spec (``nai.yaml``): parse, validate, override and serialise it.

Pure: it parses a string and never reads a file. Every problem is a SpecError that names
the source, the line and the field, and says what a valid value looks like. Each field's
own check lives in core.spec_fields.
"""

from __future__ import annotations

import dataclasses
import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

from nai_server.core.bounds import has_surrogate, shown
from nai_server.core.env_setup import EnvSetup

# Re-exported (`as`): callers import the unit helpers, parse_ref and the command's bound
# from here with the spec.
from nai_server.core.spec_fields import MAX_COMMAND_CHARS as MAX_COMMAND_CHARS
from nai_server.core.spec_fields import VALIDATORS, env_pairs
from nai_server.core.spec_fields import parse_ref as parse_ref
from nai_server.core.units import format_duration as format_duration
from nai_server.core.units import format_size as format_size
from nai_server.core.units import parse_duration as parse_duration
from nai_server.core.units import parse_size as parse_size

# Bounds of the text itself (DESIGN §11); the fields' bounds are in core.spec_fields.
MAX_SPEC_CHARS = 64 * 1024  # the text of a nai.yaml
MAX_SPEC_DEPTH = 16  # nesting of its YAML (a spec needs 2: env's mapping, after's list)


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
    # On a server whose launcher is Slurm, passed to sbatch (ignored by the local one).
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    nodes: int = 1  # machines; `gpus` is then per machine
    cpus_per_gpu: int | None = None
    # linked: code files are read-only links to the uploaded blobs; writable: a private copy
    code: str = "linked"
    # `register_model`'s headline metric: {"name": N, "direction": "min"|"max"|None}
    register_metric: dict[str, Any] | None = None


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
        if not isinstance(key, str) or key not in VALIDATORS:
            raise _unknown_key(key, line, source)
        if key in values:
            first = f" (first on line {lines[key]})" if lines[key] is not None else ""
            raise SpecError(f"given twice{first}; keep one", field=key, line=line, source=source)
        try:
            values[key] = VALIDATORS[key](raw)
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



def apply_overrides(spec: JobSpec, *, source: str = "command line", **overrides: object) -> JobSpec:
    """Return ``spec`` with the given fields replaced; a None value means "not given".

    ``env`` (a mapping or ``KEY=VALUE`` strings) is merged into the spec's env rather than
    replacing it: a flag usually adds one variable to those in nai.yaml. ``after`` and
    ``after_ok`` add to the spec's jobs too (`nai submit --after 12` waits for 12 as well
    as for those nai.yaml names).
    """
    changes: dict[str, Any] = {}
    for key, raw in overrides.items():
        if key not in VALIDATORS:
            raise _unknown_key(key, None, source)
        if raw is None:
            continue
        try:
            if key == "env":
                changes[key] = {**spec.env, **VALIDATORS["env"](env_pairs(raw))}
            elif key in ("after", "after_ok"):
                # Validated alone first, so an error shows the flag's value, not the sum.
                changes[key] = VALIDATORS[key]([*getattr(spec, key), *VALIDATORS[key](raw)])
            else:
                changes[key] = VALIDATORS[key](raw)
        except ValueError as exc:
            raise SpecError(str(exc), field=key, source=source) from None
    return dataclasses.replace(spec, **changes)

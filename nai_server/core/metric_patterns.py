"""Metrics read from a job's log: the `metrics:` key of nai.yaml and its presets.

Pure: `parse_metrics` validates what a user wrote into a plain JSON-able form (kept in
the job's spec), `Matcher` turns log lines into metric points. The daemon feeds it the
lines it reads from the log (host.metrics_ingest); nothing here touches a file.

A pattern is a regular expression whose named groups become metrics, e.g.
``'\\| epoch +(?P<epoch>\\d+) .* loss +(?P<loss>[\\d.]+)'``. A group named `step` (or
the one a pattern's `step:` names) is the point's step; without one, the step is how
many lines that pattern has matched so far. Values that are not numbers are dropped.

The daemon runs the patterns on lines that its users' jobs print, so a pattern must
not be able to stall it: every pattern, the user's and the presets', is matched by RE2
(google-re2), whose time is linear in the line, never by a backtracking engine; each
line is cut to MAX_LINE characters first. Lookarounds and backreferences, which RE2
lacks, are refused with a message. Patterns are also short and few, without nested
repetition like ``(a+)+`` and with at most MAX_WIDE_REPEATS wide repetitions
(``.*``, ``\\S+``...), which keeps RE2's automata small.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from re import _constants as sre_c  # type: ignore[attr-defined]
from re import _parser as sre_parse  # type: ignore[attr-defined]
from typing import Any

import re2

MAX_PATTERNS = 16
MAX_PATTERN_CHARS = 512
MAX_GROUPS = 32  # named groups of one pattern
MAX_WIDE_REPEATS = 2  # unbounded repetitions of wide classes (., \S, [^x]) in one pattern
MAX_BOUNDED_REPEAT = 1000  # x{n,m}: m at most this
MAX_LINE = 1024  # characters of a line that are matched; the rest is ignored
MAX_NAME = 64  # characters of a metric name
MAX_POINTS_PER_LINE = 64  # values one line may give (a preset's key=value list)
TENSORBOARD_KEY = "tensorboard"

# A step must be a whole number a JSON reader keeps exactly.
_MAX_STEP = 2**53
_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_./-]{0,63}")
# Terminal colours and cursor moves (Keras and rich colour their bars even into a file),
# and the other control characters a progress bar writes (backspaces).
_TERMINAL_CODES = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|[\x00-\x08\x0b-\x1f\x7f]")


class PatternError(ValueError):
    """A `metrics:` entry that cannot be used; the message says how to fix it."""


# --- presets --------------------------------------------------------------------------

@dataclass(frozen=True)
class _Preset:
    """A preset is a line regex plus how its pairs of name and value are found."""

    line: Any  # re2 patterns
    pairs: Any  # finds (name, value) in the part the line regex calls `pairs`
    doc: str


PRESETS: dict[str, _Preset] = {
    # Keras (2 and 3) `model.fit` with verbose=1 or 2 into a file or pipe: after
    # "Epoch 3/10", a line like "32/32 ━━━━━ 1s 5ms/step - accuracy: 0.91 - loss: 0.25".
    "keras": _Preset(
        re2.compile(r"^\s*(?P<batch>\d+)/(?P<batches>\d+)\b.*?(?P<pairs>( - [\w./-]+: "
                    + _NUMBER + r")+)\s*$"),
        re2.compile(r" - ([\w./-]+): (" + _NUMBER + r")"),
        "Keras fit() epoch lines ('Epoch N/M', then '... - loss: 0.25 - accuracy: 0.9')"),
    # Hugging Face Trainer: the dict it prints at each logging step and evaluation,
    # e.g. "{'loss': 0.6931, 'grad_norm': 1.2, 'learning_rate': 5e-05, 'epoch': 0.5}".
    "hf-trainer": _Preset(
        re2.compile(r"^\s*(?P<pairs>\{'[\w./-]+': .*\})\s*$"),
        re2.compile(r"'([\w./-]+)': (?:[\w.]+\()?'?(" + _NUMBER + r")'?\)?[,}]"),
        "Hugging Face Trainer log dicts ({'loss': 0.69, 'epoch': 0.5})"),
    # PyTorch Lightning's TQDM progress bar: "Epoch 2: 100%|████| 32/32 [00:01<00:00,
    # 25.1it/s, v_num=0, train_loss=0.123, val_loss=0.456]" (one point per update
    # that completes the epoch's bar with new values).
    "lightning-progress": _Preset(
        re2.compile(r"^\s*Epoch (?P<epoch>\d+):\s+100%.*?\|\s*(?P<batch>\d+)/(?P<batches>\d+)"
                    r" \[[^\]]*?, (?P<pairs>[\w./-]+=[^\]]*)\]\s*$"),
        re2.compile(r"([\w./-]+)=(" + _NUMBER + r")(?:[^\w.]|$)"),
        "PyTorch Lightning progress bars at the end of each epoch (train_loss=0.12)"),
}
_KERAS_EPOCH = re2.compile(r"^\s*Epoch (\d+)/(\d+)\s*$")
# Lightning's Rich progress bar (its default where `rich` is installed) draws into a
# file once, at the end: "Epoch 2/2 ━━━ 4/4 0:00:00 • 0:00:00 55.2it/s train_loss: 0.204"
# and, on the next line, the metrics that did not fit ("      val_loss: 0.068").
_RICH_PAIR = r"[\w./-]+: " + _NUMBER
_LIGHTNING_RICH = re2.compile(r"^\s*Epoch (?P<epoch>\d+)/\d+ .*? (?P<batch>\d+)/(?P<batches>\d+)"
                             r" .*?(?P<pairs>" + _RICH_PAIR + r"(?:\s+" + _RICH_PAIR
                             + r")*)\s*$")
_RICH_REST = re2.compile(r"^\s+(?P<pairs>" + _RICH_PAIR + r"(?:\s+" + _RICH_PAIR + r")*)\s*$")
_RICH_PAIRS = re2.compile(r"([\w./-]+): (" + _NUMBER + r")")
# Axes or counters, not metrics.
_PRESET_SKIP = {"keras": {"batch", "batches"}, "lightning-progress": {"v_num"}}


# --- validation -----------------------------------------------------------------------

def parse_metrics(value: object) -> dict[str, Any]:
    """Validate the `metrics:` of a spec into {"patterns": [{"pattern", "step"}...],
    "presets": [...], "tensorboard": dir or None}. Accepts a pattern string, a list of
    patterns / {pattern, step} / {preset} / {tensorboard} items, or one such mapping
    (whose `patterns` may be a list)."""
    out: dict[str, Any] = {"patterns": [], "presets": [], "tensorboard": None}
    items: list[object]
    if isinstance(value, str):
        items = [value]
    elif isinstance(value, list):
        items = list(value)
    elif isinstance(value, dict):
        items = _mapping_items(value)
    else:
        raise PatternError("must be a pattern, a list of patterns, or a mapping like "
                           "{preset: keras}")
    if len(items) > MAX_PATTERNS + 1:  # before compiling any: a crafted list is cheap to refuse
        raise PatternError(f"at most {MAX_PATTERNS} patterns and presets together")
    for item in items:
        _add_item(out, item)
    if len(out["patterns"]) + len(out["presets"]) > MAX_PATTERNS:
        raise PatternError(f"at most {MAX_PATTERNS} patterns and presets together")
    if not (out["patterns"] or out["presets"] or out["tensorboard"]):
        raise PatternError("is empty: give a pattern, e.g. 'loss=(?P<loss>[\\d.]+)', "
                           "or a preset, e.g. {preset: keras}")
    return out


def _mapping_items(value: dict[Any, Any]) -> list[object]:
    if "pattern" in value:
        return [value]
    items: list[object] = []
    for key, raw in value.items():
        if key == "patterns":
            items += raw if isinstance(raw, list) else [raw]
        elif key == "preset":
            items += [{"preset": p} for p in (raw if isinstance(raw, list) else [raw])]
        elif key == TENSORBOARD_KEY:
            items.append({TENSORBOARD_KEY: raw})
        else:
            raise PatternError(f"unknown key {str(key)[:40]!r}: use patterns, preset or "
                               f"{TENSORBOARD_KEY}")
    return items


def _add_item(out: dict[str, Any], item: object) -> None:
    if isinstance(item, str):
        out["patterns"].append({"pattern": check_pattern(item), "step": None})
        return
    if not isinstance(item, dict) or len(item) not in (1, 2):
        raise PatternError(f"each entry must be a pattern string or a mapping like "
                           f"{{preset: keras}}, got {str(item)[:60]!r}")
    if "preset" in item and len(item) == 1:
        name = item["preset"]
        if not isinstance(name, str) or name not in PRESETS:
            raise PatternError(f"unknown preset {str(name)[:40]!r}; presets: "
                               f"{', '.join(PRESETS)}")
        if name not in out["presets"]:
            out["presets"].append(name)
    elif TENSORBOARD_KEY in item and len(item) == 1:
        out[TENSORBOARD_KEY] = _relative_dir(item[TENSORBOARD_KEY])
    elif "pattern" in item and set(item) <= {"pattern", "step"}:
        pattern = check_pattern(item["pattern"])
        step = item.get("step")
        if step is not None and (not isinstance(step, str)
                                 or step not in re.compile(pattern).groupindex):
            raise PatternError(f"step {str(step)[:40]!r} must name one of the pattern's "
                               f"groups ({', '.join(re.compile(pattern).groupindex)})")
        out["patterns"].append({"pattern": pattern, "step": step})
    else:
        raise PatternError(f"unknown entry {str(item)[:60]!r}: use a pattern string, "
                           f"{{pattern: ..., step: GROUP}}, {{preset: NAME}} or "
                           f"{{{TENSORBOARD_KEY}: DIR}}")


def _relative_dir(value: object) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 256:
        raise PatternError(f"{TENSORBOARD_KEY} must be a directory inside the job's code "
                           f"or output, e.g. runs/")
    parts = [p for p in value.strip().split("/") if p not in ("", ".")]
    if value.startswith("/") or ".." in parts or "\0" in value or not parts:
        raise PatternError(f"{TENSORBOARD_KEY} must be a relative directory without '..', "
                           f"e.g. runs/, got {value[:60]!r}")
    return "/".join(parts)


def check_pattern(pattern: object) -> str:
    """The pattern, if it is safe and useful to run on every log line; else PatternError
    saying what is wrong."""
    if not isinstance(pattern, str) or not pattern:
        raise PatternError("a pattern must be a non-empty string (quote it in YAML: "
                           "'loss=(?P<loss>[\\d.]+)')")
    if len(pattern) > MAX_PATTERN_CHARS:
        raise PatternError(f"pattern {pattern[:40]!r}... is {len(pattern)} characters; "
                           f"at most {MAX_PATTERN_CHARS}")
    try:
        parsed = sre_parse.parse(pattern)
        compiled = re.compile(pattern)
    except (re.error, OverflowError, RecursionError) as exc:
        raise PatternError(f"pattern {pattern[:60]!r} is not a valid regular expression: "
                           f"{exc}") from None
    names = list(compiled.groupindex)
    if not names:
        raise PatternError(f"pattern {pattern[:60]!r} has no named group: name what it "
                           f"captures, e.g. loss=(?P<loss>[\\d.]+)")
    if len(names) > MAX_GROUPS:
        raise PatternError(f"pattern {pattern[:60]!r} has {len(names)} named groups; "
                           f"at most {MAX_GROUPS}")
    for name in names:
        if len(name) > MAX_NAME:
            raise PatternError(f"group name {name[:40]!r}... is longer than {MAX_NAME}")
    wide = _check_repeats(parsed.data, pattern, False)
    if wide > MAX_WIDE_REPEATS:
        raise PatternError(
            f"pattern {pattern[:60]!r} has {wide} repetitions of wide classes like .* or "
            f"\\S+; at most {MAX_WIDE_REPEATS} (use narrow ones like \\d+ or [\\d.]+)")
    if _uses(parsed.data, _NOT_IN_RE2):
        raise PatternError(f"pattern {pattern[:60]!r} uses a lookaround, a backreference "
                           f"or an atomic group; metrics patterns run with RE2, in time "
                           f"linear in the line, which has none of these: match the text "
                           f"itself instead")
    try:
        re2.compile(pattern)
    except re2.error as exc:
        raise PatternError(f"pattern {pattern[:60]!r} cannot run with RE2: {exc}") from None
    return pattern


_NOT_IN_RE2 = {sre_c.ASSERT, sre_c.ASSERT_NOT, sre_c.GROUPREF, sre_c.GROUPREF_EXISTS,
               getattr(sre_c, "ATOMIC_GROUP", None), getattr(sre_c, "POSSESSIVE_REPEAT", None),
               getattr(sre_c, "GROUPREF_IGNORE", None)} - {None}


def _uses(items: Any, ops: set[Any]) -> bool:
    """Whether a parsed pattern uses any of `ops`, at any depth."""
    for op, arg in items:
        if op in ops:
            return True
        for part in arg if isinstance(arg, (tuple, list)) else ():
            if isinstance(part, sre_parse.SubPattern) and _uses(part.data, ops):
                return True
            if isinstance(part, list) and part and isinstance(part[0], sre_parse.SubPattern) \
                    and any(_uses(b.data, ops) for b in part):
                return True
    return False


_REPEATS = {sre_c.MAX_REPEAT, sre_c.MIN_REPEAT, getattr(sre_c, "POSSESSIVE_REPEAT", None)}
_WIDE_CATEGORIES = {sre_c.CATEGORY_NOT_DIGIT, sre_c.CATEGORY_NOT_SPACE,
                    sre_c.CATEGORY_NOT_WORD}


def _is_wide(item: list[tuple[Any, Any]]) -> bool:
    """Whether a repeated item matches most characters (., [^x], \\S, \\D, \\W)."""
    if len(item) != 1:
        return True  # a group: counted by what is inside it
    op, arg = item[0]
    if op in (sre_c.ANY, sre_c.NOT_LITERAL):
        return True
    if op == sre_c.IN:
        return any(o == sre_c.NEGATE or (o == sre_c.CATEGORY and a in _WIDE_CATEGORIES)
                   for o, a in arg)
    return False


def _check_repeats(items: Any, pattern: str, inside_repeat: bool) -> int:
    """Count the wide unbounded repetitions; refuse nested unbounded repetition and
    huge bounded counts, the shapes that make a backtracking matcher take exponential
    time or memory."""
    wide = 0
    for op, arg in items:
        if op in _REPEATS:
            low, high, sub = arg
            unbounded = high == sre_c.MAXREPEAT
            if not unbounded and high > MAX_BOUNDED_REPEAT:
                raise PatternError(f"pattern {pattern[:60]!r} repeats {{{low},{high}}} "
                                   f"times; at most {MAX_BOUNDED_REPEAT}")
            if unbounded and inside_repeat:
                raise PatternError(f"pattern {pattern[:60]!r} nests repetitions like "
                                   f"(a+)+, which can take exponential time; remove the "
                                   f"inner or the outer one")
            if unbounded and _is_wide(list(sub)):
                wide += 1
            wide += _check_repeats(sub, pattern, inside_repeat or unbounded or high > 1)
        elif op == sre_c.SUBPATTERN:
            wide += _check_repeats(arg[-1], pattern, inside_repeat)
        elif op == sre_c.BRANCH:
            wide += sum(_check_repeats(b, pattern, inside_repeat) for b in arg[1])
        elif op in (sre_c.ASSERT, sre_c.ASSERT_NOT):
            wide += _check_repeats(arg[1], pattern, inside_repeat)
        elif op == getattr(sre_c, "ATOMIC_GROUP", None):
            wide += _check_repeats(arg, pattern, inside_repeat)
        elif op == sre_c.GROUPREF_EXISTS:
            wide += sum(_check_repeats(b, pattern, inside_repeat) for b in arg[1:] if b)
    return wide


# --- matching -------------------------------------------------------------------------

@dataclass
class MatchState:
    """What a Matcher remembers between lines (the daemon saves it with the offset)."""

    counts: list[int] = field(default_factory=list)  # lines matched, per pattern/preset
    epoch: int | None = None  # keras: the epoch its last "Epoch N/M" line named
    last: dict[str, str] = field(default_factory=dict)  # preset → last point given

    def to_json(self) -> dict[str, Any]:
        return {"counts": self.counts, "epoch": self.epoch, "last": self.last}

    @classmethod
    def from_json(cls, data: object) -> MatchState:
        """A saved state; anything malformed starts afresh (it only shifts steps)."""
        if not isinstance(data, dict):
            return cls()
        counts = data.get("counts")
        epoch = data.get("epoch")
        last = data.get("last")
        return cls(
            counts=[c for c in counts if isinstance(c, int) and 0 <= c < _MAX_STEP][:64]
            if isinstance(counts, list) else [],
            epoch=epoch if isinstance(epoch, int) and 0 <= epoch < _MAX_STEP else None,
            last={k: v[:4096] for k, v in last.items()
                  if isinstance(k, str) and isinstance(v, str)} if isinstance(last, dict)
            else {})


class Matcher:
    """Turns log lines into metric points for one validated `metrics:` value."""

    def __init__(self, metrics: dict[str, Any]) -> None:
        self.patterns = [(re2.compile(p["pattern"]), p.get("step"))
                         for p in metrics.get("patterns") or ()]
        self.presets = [name for name in metrics.get("presets") or () if name in PRESETS]

    def __bool__(self) -> bool:
        return bool(self.patterns or self.presets)

    def points(self, lines: Iterable[str], state: MatchState) -> list[dict[str, Any]]:
        """The points the lines give, in order ({"step", name: value...}); `state`
        is updated so that the next call goes on where this one stopped."""
        slots = len(self.patterns) + len(self.presets)
        state.counts = (state.counts + [0] * slots)[:slots]
        found: list[dict[str, Any]] = []
        for raw in lines:
            line = _TERMINAL_CODES.sub("", raw[:4 * MAX_LINE])[:MAX_LINE]
            for index, (regex, step_group) in enumerate(self.patterns):
                match = regex.search(line)
                if match is None:
                    continue
                state.counts[index] += 1
                values = {k: v for k, v in match.groupdict().items() if v is not None}
                point = _point(values, step_group or "step", state.counts[index])
                if point is not None:
                    found.append(point)
            for offset, name in enumerate(self.presets, len(self.patterns)):
                point = self._preset(name, line, state, offset)
                if point is not None:
                    found.append(point)
        return found

    @staticmethod
    def _preset(name: str, line: str, state: MatchState, slot: int) -> dict[str, Any] | None:
        if name == "keras":
            epoch = _KERAS_EPOCH.match(line)
            if epoch:
                state.epoch = int(epoch.group(1))
                return None
        if name == "lightning-progress":
            rich = Matcher._lightning_rich(line, state)
            if rich is not None:
                state.counts[slot] += 1
                return _point(rich, "epoch", state.counts[slot])
        match = PRESETS[name].line.search(line)
        if match is None:
            return None
        pairs = PRESETS[name].pairs.findall(match.group("pairs"))[:MAX_POINTS_PER_LINE]
        skip = _PRESET_SKIP.get(name, set())
        values = {k: v for k, v in pairs if k not in skip}
        if name == "keras":
            if match.group("batch") != match.group("batches"):
                return None  # a partial bar (an interactive run's redraw)
            if state.epoch is not None:
                values["epoch"] = str(state.epoch)
        elif name == "lightning-progress":
            # The bar is drawn again and again, and keeps the last epoch's val_loss until
            # validation ends: only values that changed make a point.
            seen = dict(pair.split("=", 1) for pair in state.last.get(name, "").split()
                        if "=" in pair)
            values = {k: v for k, v in values.items() if seen.get(k) != v}
            if not values:
                return None
            seen.update(values)
            state.last[name] = " ".join(f"{k}={v}" for k, v in seen.items())[:4096]
            values["epoch"] = match.group("epoch")
        state.counts[slot] += 1
        step_key = "epoch" if "epoch" in values and name != "hf-trainer" else "step"
        return _point(values, step_key, state.counts[slot])

    @staticmethod
    def _lightning_rich(line: str, state: MatchState) -> dict[str, str] | None:
        """The values of a finished Rich bar's line, or of the line after it."""
        rest_of = state.last.pop("lightning-rich", None)
        match = _LIGHTNING_RICH.match(line)
        if match is not None and match.group("batch") == match.group("batches"):
            state.last["lightning-rich"] = match.group("epoch")
            return {**dict(_RICH_PAIRS.findall(match.group("pairs"))),
                    "epoch": match.group("epoch")}
        more = _RICH_REST.match(line) if rest_of is not None else None
        if more is None:
            return None
        return {**dict(_RICH_PAIRS.findall(more.group("pairs"))), "epoch": rest_of}


def _point(values: dict[str, str], step_key: str, count: int) -> dict[str, Any] | None:
    """A point from captured text: numbers only, the step first."""
    point: dict[str, Any] = {}
    for name, text in values.items():
        number = _number(text)
        if number is not None and _NAME_RE.fullmatch(name):
            point[name] = number
    step = point.get(step_key)
    if step_key != "step":
        point.pop("step", None)
    if isinstance(step, int) and 0 <= step < _MAX_STEP:
        step_value = step
    elif isinstance(step, float) and step.is_integer() and 0 <= step < _MAX_STEP:
        step_value = int(step)
    else:
        step_value = count
    metrics = {k: v for k, v in point.items() if k not in ("step", "time")}
    if not set(metrics) - {"epoch"}:
        return None
    return {"step": step_value, **metrics}


def _number(text: str) -> int | float | None:
    text = text.strip()
    if not text or len(text) > 40:
        return None
    try:
        if re.fullmatch(r"[-+]?\d+", text):
            value: int | float = int(text)
            return value if abs(value) < _MAX_STEP else float(value)
        number = float(text)
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def clean_point(point: object) -> dict[str, Any] | None:
    """A point another reader produced (TensorBoard's), kept only as far as it is sane:
    an int step, a time, and numeric metrics with metric-like names."""
    if not isinstance(point, dict):
        return None
    step, at = point.get("step"), point.get("time")
    if not isinstance(step, int) or isinstance(step, bool) or not 0 <= step < _MAX_STEP:
        return None
    out: dict[str, Any] = {"step": step}
    if isinstance(at, (int, float)) and not isinstance(at, bool) and math.isfinite(at):
        out["time"] = at
    for name, value in list(point.items())[:MAX_POINTS_PER_LINE + 2]:
        if name in ("step", "time") or not isinstance(name, str) \
                or not _NAME_RE.fullmatch(name) or isinstance(value, bool):
            continue
        if isinstance(value, (int, float)) and math.isfinite(value):
            out[name] = value
    return out if len(out) > 1 + ("time" in out) else None

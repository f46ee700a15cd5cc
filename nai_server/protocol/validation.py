"""A refused request body in words: what pydantic found, said as a sentence that names
the field, the value and the limit, never as a regex or pydantic's own phrasing.

A constrained string says once, where its pattern is defined, what the pattern allows
(`described`); every refusal of that pattern, in a body, a query or a path, reads it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from nai_server.core.bounds import shown

_RULES: dict[str, str] = {}
_NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?")


def described(pattern: str, rule: str) -> str:
    """``pattern`` as it is, remembered with ``rule``: the words a person who typed a
    value it refuses reads (e.g. "use letters, digits, …")."""
    _RULES[pattern] = rule
    return pattern


def pattern_rule(pattern: str) -> str | None:
    """The words `described` gave ``pattern``, or None for a pattern nobody described."""
    return _RULES.get(pattern)


def _sentence(kind: str, ctx: Mapping[str, Any], value: Any, msg: str) -> str | None:
    """What is wrong, after the field's name; None where pydantic's words must do."""
    got = f", got {shown(value)}"
    if kind == "string_too_long":
        return f"at most {ctx.get('max_length')} characters, got {_length(value)}"
    if kind == "string_too_short":
        least = ctx.get("min_length")
        return "must not be empty" if least == 1 else (
            f"at least {least} characters, got {_length(value)}")
    if kind == "too_long":
        return f"at most {ctx.get('max_length')} items, got {ctx.get('actual_length')}"
    if kind == "too_short":
        return f"at least {ctx.get('min_length')} items, got {ctx.get('actual_length')}"
    bounds = {"greater_than_equal": ("at least", "ge"), "greater_than": ("more than", "gt"),
              "less_than_equal": ("at most", "le"), "less_than": ("less than", "lt")}
    if kind in bounds:
        words, key = bounds[kind]
        return f"must be {words} {shown(ctx.get(key))}, got {_plain(value)}"
    if kind == "missing":
        return "required, but missing"
    if kind == "extra_forbidden":
        return "unknown field: check its spelling, or leave it out"
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return f"must be a whole number{got}"
    if kind in ("float_parsing", "float_type"):
        return f"must be a number{got}"
    if kind in ("bool_parsing", "bool_type"):
        return f"must be true or false{got}"
    if kind == "string_type":
        return f"must be a string{got}"
    if kind in ("literal_error", "enum"):
        return f"must be {ctx.get('expected')}{got}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"must be an object (a JSON mapping){got}"
    if kind == "list_type":
        return f"must be a list{got}"
    if kind in ("value_error", "assertion_error"):
        # Our own validators' words, after pydantic's "Value error, " prefix.
        return msg.split(", ", 1)[1] if msg.startswith(("Value error, ", "Assertion failed, "))\
            else msg
    return None


def _plain(value: Any) -> str:
    """A number as written, quoted or not: query and path values arrive as strings."""
    if isinstance(value, str) and _NUMBER.fullmatch(value[:40]):
        return value
    return shown(value)


def _length(value: Any) -> str:
    return str(len(value)) if isinstance(value, (str, list, tuple, dict)) else "more"


def error_sentence(error: Mapping[str, Any], skip: Sequence[str] = ("body",)) -> str:
    """One pydantic error (an item of ``ValidationError.errors()``) as "FIELD: what is
    wrong", FIELD its dotted location less the parts in ``skip``; keys in the location
    are the caller's own (an unknown field's name), so they are shown cut short."""
    kind = str(error.get("type", ""))
    parts = tuple(error.get("loc", ()))
    ctx = error.get("ctx") or {}
    if kind == "json_invalid":  # its location is a character offset into the body
        where = f" at character {parts[-1]}" if parts and isinstance(parts[-1], int) else ""
        return f"body: not valid JSON ({_cut(str(ctx.get('error', '')), 100)}{where})"
    loc = ".".join(_cut(str(p), 80) for p in parts if p not in skip) or "body"
    value = error.get("input")
    if kind == "string_pattern_mismatch" and (rule := pattern_rule(str(ctx.get("pattern")))):
        return f"{loc} {shown(value)}: {rule}"
    msg = _cut(str(error.get("msg", "")), 300)
    return f"{loc}: {_cut(_sentence(kind, ctx, value, msg) or msg, 400)}"


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"

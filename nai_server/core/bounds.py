"""Bounds on what a request may carry, and how a user's value is shown in a message.

Pure. Everything a client sends ends up in the state file (TinyDB, written by orjson,
which refuses integers beyond 64 bits and strings with lone surrogates) or in an error
message sent back: one unbounded value there either poisons every later commit or turns
a 353-byte request into a 351 MB answer. So values are bounded when they are validated,
and messages quote at most a few dozen characters of any value. JSON a job writes (its
metrics.jsonl, a helper running as its owner) is read with `json_loads` and `json_row`:
a crafted line is skipped like a malformed one, never an exception the caller missed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

SHOWN_CHARS = 80  # at most this much of a user's value is quoted in a message
MAX_JSON_DEPTH = 32  # nesting of free JSON (registry metadata, job specs)
MAX_JSON_STRING = 1 << 20  # the body cap; the registry bounds metadata on its own
MAX_JSON_ITEMS = 10_000  # keys and items in one free JSON value, all levels together
# What JSON numbers may hold in free data: JavaScript's exact integers, so every client
# reads back the number it sent, and far inside the 64 bits the state file can store.
MAX_JSON_INT = 2**53 - 1
MAX_ID = 2**53 - 1  # job ids, offsets and line numbers in requests

_SURROGATE = re.compile("[\ud800-\udfff]")


def shown(value: object, limit: int = SHOWN_CHARS) -> str:
    """`repr(value)` cut to `limit` characters (ending in "…"): a user's value as it may
    appear in a message. The repr escapes control characters and lone surrogates, so
    the message stays one line and encodes."""
    if isinstance(value, str) and len(value) > limit:
        value = value[:limit]  # cut first: the repr of a huge value is never built
        text = repr(value)
    elif isinstance(value, (str, int, float, bool)) or value is None:
        text = repr(value) if not isinstance(value, int) or abs(value) < 10**limit else "<int>"
    else:
        text = _shown_container(value, limit)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _shown_container(value: object, limit: int) -> str:
    """A bounded repr of a list or mapping: never walks more than a few items."""
    if isinstance(value, Mapping):
        parts = [f"{shown(k, limit)}: {shown(v, limit)}" for k, v in list(value.items())[:4]]
        more = ", …" if len(value) > 4 else ""
        return "{" + ", ".join(parts) + more + "}"
    if isinstance(value, (list, tuple)):
        parts = [shown(item, limit) for item in value[:4]]
        more = ", …" if len(value) > 4 else ""
        return "[" + ", ".join(parts) + more + "]"
    return f"<{type(value).__name__}>"


def scrub(text: str) -> str:
    """`text` with lone surrogates replaced (U+FFFD), so that it can be encoded as UTF-8."""
    return _SURROGATE.sub("\ufffd", text)


def has_surrogate(text: str) -> bool:
    return _SURROGATE.search(text) is not None


def json_problem(value: Any, *, max_depth: int = MAX_JSON_DEPTH) -> str | None:
    """Why free JSON `value` cannot be stored, or None: nesting deeper than `max_depth`,
    more than MAX_JSON_ITEMS keys and items, an integer beyond ±MAX_JSON_INT, a float
    that is not finite, a string over MAX_JSON_STRING or with a lone surrogate."""
    budget = [MAX_JSON_ITEMS]
    return _problem(value, max_depth, budget, "")


def _problem(value: Any, depth: int, budget: list[int], where: str) -> str | None:
    at = f" at {where}" if where else ""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        if abs(value) > MAX_JSON_INT:
            return f"integer{at} is out of range (at most ±{MAX_JSON_INT})"
        return None
    if isinstance(value, float):
        return None if value == value and abs(value) != float("inf") else (
            f"number{at} is not finite")
    if isinstance(value, str):
        if len(value) > MAX_JSON_STRING:
            return f"string{at} is longer than {MAX_JSON_STRING} characters"
        return f"string{at} is not valid UTF-8 (lone surrogate)" if has_surrogate(value) else None
    if not isinstance(value, (Mapping, list, tuple)):
        return f"value{at} is not JSON"
    if depth <= 0:
        return f"value{at} is nested too deeply (at most {MAX_JSON_DEPTH} levels)"
    budget[0] -= len(value)
    if budget[0] < 0:
        return f"value has more than {MAX_JSON_ITEMS} keys and items in all"
    pairs = value.items() if isinstance(value, Mapping) else enumerate(value)
    for key, item in pairs:
        if isinstance(key, str) and (len(key) > 256 or has_surrogate(key)):
            return f"key {shown(key, 40)}{at} is too long or not valid UTF-8"
        inner = f"{where}.{key}" if where else str(key)
        if (why := _problem(item, depth - 1, budget, shown(inner, 60).strip("'"))) is not None:
            return why
    return None


def json_loads(data: str | bytes) -> Any:
    """`json.loads` for what the daemon did not write itself (a job's files, a helper
    that runs as a job's owner): ValueError for whatever it cannot read. json.loads
    raises RecursionError, not ValueError, for nesting past about a thousand levels
    ('[' * 1000), which would pass the callers' `except ValueError`."""
    try:
        return json.loads(data)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


def json_row(line: bytes) -> dict[str, Any] | None:
    """The object on one line of a JSON-lines file a job writes (metrics.jsonl), or
    None for a line to skip like any malformed one: not JSON, not an object, or nested
    deeper than MAX_JSON_DEPTH (the API cannot send a few hundred levels back). NaN and
    ±Infinity, which Python's json reads and writes, become None, as the API shows them.
    What is kept in the state file must still pass `json_problem`."""
    try:  # as json.loads(line), with the constants changed
        row = _ROWS.decode(line.decode(json.detect_encoding(line), "surrogatepass"))
    except (ValueError, RecursionError):
        return None
    if not isinstance(row, dict):
        return None
    # Counted in C: only a line with that many brackets can be nested that deep.
    if line.count(b"[") + line.count(b"{") > MAX_JSON_DEPTH and _deeper(row, MAX_JSON_DEPTH):
        return None
    return row


def _no_number(_: str) -> None:
    return None


_ROWS = json.JSONDecoder(parse_constant=_no_number)  # made once: json.loads(**kw) makes one a call


def _deeper(value: Any, depth: int) -> bool:
    """Whether lists and objects in `value` nest more than `depth` levels."""
    if isinstance(value, dict):
        value = list(value.values())
    elif not isinstance(value, list):
        return False
    return depth <= 0 or any(_deeper(item, depth - 1) for item in value)

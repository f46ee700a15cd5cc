"""Report metrics from a job in one line: ``from nai_metrics import log``.

    from nai_metrics import log
    log(step=epoch, loss=loss, accuracy=acc)

Each call appends one JSON line ({"step", "time", name: value...}) to the file that
``$NAI_METRICS_FILE`` names, which nai sets for every job; `nai metrics`, the TUI's
plots and `register_model` read it. Outside nai (the variable unset) it does nothing,
so the same script runs anywhere. Standard library only, one file: copy it into a
project that cannot install nothingai. Values may be numbers or anything with
`float()` (numpy and torch scalars); NaN and infinities are written as the strings
"nan", "inf" and "-inf" so that the line stays strict JSON.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping
from typing import Any

__all__ = ["enabled", "log"]
ENV = "NAI_METRICS_FILE"
_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)


def enabled() -> bool:
    """Whether this process runs as a nai job (log() writes somewhere)."""
    return bool(os.environ.get(ENV))


def log(metrics: Mapping[str, Any] | None = None, /, *, step: int | None = None,
        **values: Any) -> None:
    """Append one point: `step` (optional) and the metrics, given as keywords or as a
    mapping. A value that is not a number is an error, raised before anything is
    written (a typo must not silently drop a metric)."""
    path = os.environ.get(ENV)
    merged = {**(metrics or {}), **values}
    point: dict[str, Any] = {}
    if step is not None:
        point["step"] = int(step)
    point.setdefault("time", round(time.time(), 3))
    for name, value in merged.items():
        point[str(name)] = _number(name, value)
    if not path:
        return
    line = (json.dumps(point, allow_nan=False) + "\n").encode()
    fd = os.open(path, _FLAGS, 0o644)
    try:
        os.write(fd, line)  # one write with O_APPEND: lines of several writers never mix
    finally:
        os.close(fd)


def _number(name: str, value: Any) -> int | float | str:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"nai_metrics.log: {name}={value!r} is not a number") from None
    if math.isnan(number):
        return "nan"
    if math.isinf(number):
        return "inf" if number > 0 else "-inf"
    return number

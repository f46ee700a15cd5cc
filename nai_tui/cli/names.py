"""Names and tags as the server takes them, checked before anything is sent.

The patterns are the protocol's (`NAME_PATTERN`, `TAG_PATTERN`); this module only puts
a refusal into words, so a bad name is refused before an upload, not after it."""

from __future__ import annotations

import re

from nai_server.protocol import NAME_PATTERN, TAG_PATTERN
from nai_tui.cli.contract import UsageMistake

_RULE = "use letters, digits, '.', '_' or '-', starting with {start}, at most 64"


def name_problem(what: str, value: str, *, tag: bool = False) -> str | None:
    """Why the server would refuse `value` as a name (or, with `tag`, as a version's
    tag), in words that start with `what`; None when it would take it."""
    if re.fullmatch(TAG_PATTERN if tag else NAME_PATTERN, value):  # `$` passes "a\n"
        return None
    # A tag starts with a letter so that `NAME@3` always means version 3.
    start = "a letter" if tag else "a letter or digit"
    return f"{what} {value!r}: " + _RULE.format(start=start)


def check_name(what: str, value: str | None, *, tag: bool = False) -> None:
    """Refuse (a usage mistake, exit 2) a name or tag the server would refuse."""
    if value is not None and (problem := name_problem(what, value, tag=tag)) is not None:
        raise UsageMistake(problem)

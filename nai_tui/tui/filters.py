"""The jobs screen's filter line, as k9s and squeue users type it:
`user:alice state:failed gpus:>2 name~regex #42 free words`.

`user:` and `state:` go to the server (they filter the whole history there); the rest
is matched here against the jobs fetched. Pure: no Textual, no I/O.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from nai_server.protocol import JobInfo, JobState

MAX_REGEX = 200  # characters of a name~regex
_COMPARE: dict[str, Callable[[int, int], bool]] = {
    ">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt,
    "=": operator.eq, "": operator.eq}
_GPUS = re.compile(r"^(>=|<=|>|<|=)?(\d{1,4})$")
STATES = {s.value for s in JobState}


@dataclass
class JobFilter:
    """What a filter line asks for; `problem` says what could not be read."""

    user: str | None = None
    state: str | None = None
    gpus: tuple[str, int] | None = None
    name: re.Pattern[str] | None = None
    ids: set[int] = field(default_factory=set)
    words: list[str] = field(default_factory=list)
    problem: str | None = None

    @property
    def local(self) -> bool:
        """Whether some of it is matched here (not only by the server)."""
        return bool(self.gpus or self.name or self.ids or self.words)

    @property
    def empty(self) -> bool:
        return not (self.local or self.user or self.state)

    def matches(self, job: JobInfo) -> bool:
        if self.user is not None and job.user != self.user:
            return False
        if self.state is not None and job.state != self.state:
            return False
        if self.gpus is not None:
            op, count = self.gpus
            if not _COMPARE[op](int(job.spec.get("gpus") or len(job.gpus)), count):
                return False
        if self.name is not None and not self.name.search(job.name):
            return False
        if self.ids and job.id not in self.ids:
            return False
        if self.words:
            hay = f"#{job.id} {job.id} {job.name} {job.user} {job.state} {job.reason or ''} " \
                  f"{job.message or ''} {job.group or ''}".lower()
            return all(word in hay for word in self.words)
        return True


def parse_filter(text: str) -> JobFilter:
    """Read a filter line. What cannot be read is said in `problem` and left out."""
    found = JobFilter()
    problems: list[str] = []
    for token in text.split():
        key, sep, value = token.partition(":")
        if sep and key.lower() == "user" and value:
            found.user = value
        elif sep and key.lower() == "state" and value:
            state = value.lower().replace(" ", "_")
            if state in STATES:
                found.state = state
            else:
                problems.append(f"no state {value!r}")
        elif sep and key.lower() == "gpus" and value:
            match = _GPUS.match(value)
            if match:
                found.gpus = (match.group(1) or "", int(match.group(2)))
            else:
                problems.append(f"gpus: a number, or >n, <n, >=n, <=n, not {value!r}")
        elif token.lower().startswith("name~"):
            found.name = _regex(token[5:], problems)
        elif token.startswith("#") and token[1:].isdigit():
            found.ids.add(int(token[1:]))
        else:
            found.words.append(token.lower())
    found.problem = "; ".join(problems) or None
    return found


def _regex(pattern: str, problems: list[str]) -> re.Pattern[str] | None:
    if not pattern:
        return None
    if len(pattern) > MAX_REGEX:
        problems.append(f"name~: at most {MAX_REGEX} characters")
        return None
    try:
        return re.compile(pattern, re.IGNORECASE)
    except re.error as exc:
        problems.append(f"name~{pattern}: {exc}")
        return None

"""Waiting between the tries of something that may fail for a while: an upload or a
download cut off, an SSH server whose session slots are full, a forward whose link
dropped. One rule for all of them: each delay `factor` times the one before, from
`first` up to `cap`, shortened at random by up to `jitter` of itself (so clients cut off
together do not come back together), for at most `retries` retries and never past
`deadline` seconds after the first try."""

from __future__ import annotations

import dataclasses
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from nai_server.protocol import ConnectionFailed

LOG = logging.getLogger("nai.remote")


@dataclass(frozen=True)
class Policy:
    """How to retry. `retries=None`: no count (the deadline decides); `deadline=None`:
    no time limit (the count decides); `retry_on`: the errors worth another try."""

    first: float
    cap: float
    factor: float = 2.0
    jitter: float = 0.0
    retries: int | None = None
    deadline: float | None = None
    retry_on: tuple[type[BaseException], ...] = (ConnectionFailed,)

    def replace(self, **changes: object) -> Policy:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


# Uploads and downloads that were cut off resume after 1, 2, 4... seconds (at most 30).
TRANSFER_RETRIES = 3
TRANSFERS = Policy(first=1.0, cap=30.0, retries=TRANSFER_RETRIES)
# A forwarded request that found the link to the daemon down (a daemon restart, an SSH
# connection lost) is sent again after 0.5, 1, 2... seconds (at most 5), for a minute.
FORWARDS = Policy(first=0.5, cap=5.0, jitter=0.25, deadline=60.0)
# The TUI reconnects to a server it lost after 1, 2, 4... seconds (at most 30), for as
# long as it runs (R tries at once).
RECONNECTS = Policy(first=1.0, cap=30.0, jitter=0.25)


class Backoff:
    """The retries of one operation under `policy`. The clock, the sleep and the random
    draw are parameters so that tests need neither time nor luck."""

    def __init__(self, policy: Policy, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep,
                 rand: Callable[[], float] = random.random, log: logging.Logger = LOG) -> None:
        self.policy = policy
        self.clock, self.sleep, self.rand, self.log = clock, sleep, rand, log
        self.started = clock()
        self.retries = 0  # made so far

    def next_delay(self, error: BaseException) -> float | None:
        """The wait before retrying after `error`, counted as a retry; None when it is not
        one to retry, or no retry is left (the count is spent, or the next try would
        start past the deadline)."""
        if not isinstance(error, self.policy.retry_on):
            return None
        return self.next()

    def next(self) -> float | None:
        """The wait before the next try, counted as a retry; None when no retry is left."""
        p = self.policy
        if p.retries is not None and self.retries >= p.retries:
            return None
        delay = min(p.cap, p.first * p.factor ** self.retries)
        delay *= 1 - p.jitter * self.rand()
        if p.deadline is not None and self.clock() + delay > self.started + p.deadline:
            return None
        self.retries += 1
        return delay

    def reset(self) -> None:
        """Start over, as after a success: no retries made, the deadline from now."""
        self.retries = 0
        self.started = self.clock()

    def pause(self, error: BaseException, what: str | None = None) -> bool:
        """After a failed try: wait before the next one and return True, or return False
        when none is left (the caller raises). `what` names the failure in a warning."""
        delay = self.next_delay(error)
        if delay is None:
            return False
        if what is not None:
            self.log.warning("%s (%s); resuming in %.0f s", what, error, delay)
        self.sleep(delay)
        return True

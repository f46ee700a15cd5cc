"""Stream a growing log until whatever writes it has ended (jobs and service replicas)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from starlette.concurrency import run_in_threadpool

from nai_server.app.jobs import Jobs


async def follow_log(ended: Callable[[], bool], where: Path, offset: int, *, chunk: int,
                 poll: float) -> AsyncIterator[bytes]:
    """The log in `where` from byte `offset`, as it grows, until `ended()`. The end is
    asked before each read: all that was written before it is read, nothing is cut."""
    while True:
        done = await run_in_threadpool(ended)
        data = await run_in_threadpool(Jobs.read_log, where, offset, chunk)
        if data:
            offset += len(data)
            yield data
            continue
        if done:
            return
        await asyncio.sleep(poll)

"""Dynamic batching, as LitServe and Triton do it: requests that arrive together are
grouped into one `predict_batch` call and each gets its own output back.

The first request of a batch waits up to `max_wait` for others; the batch goes as soon
as it holds `max_batch` inputs. Batches run one at a time in a single worker thread (a
model is rarely safe to call from two threads), so the event loop stays free to answer
/health and to gather the next batch while one runs."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

Item = tuple[Any, "asyncio.Future[Any]"]


class Failed:
    """In `run_batch`'s answer: the input at this place failed alone, with `error`."""

    def __init__(self, error: Exception) -> None:
        self.error = error


class Batcher:
    """Queue inputs; a loop gathers them into batches for `run_batch` (list → list)."""

    def __init__(self, run_batch: Callable[[list[Any]], list[Any]], *, max_batch: int = 1,
                 max_wait: float = 0.005) -> None:
        self.run_batch = run_batch
        self.max_batch = max(1, max_batch)
        self.max_wait = max(0.0, max_wait)
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="predict")
        self._queue: asyncio.Queue[Item] | None = None
        self._task: asyncio.Task[None] | None = None

    async def submit(self, inputs: Any) -> Any:
        """The output for `inputs`, or the exception the batch holding it raised."""
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._task = asyncio.create_task(self._loop(self._queue))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        await self._queue.put((inputs, future))
        return await future

    async def _gather(self, queue: asyncio.Queue[Item]) -> list[Item]:
        batch = [await queue.get()]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait
        while len(batch) < self.max_batch:
            try:
                batch.append(queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            left = deadline - loop.time()
            if left <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(queue.get(), left))
            except TimeoutError:
                break
        return batch

    async def _loop(self, queue: asyncio.Queue[Item]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._gather(queue)
            live = [(x, f) for x, f in batch if not f.done()]  # callers that gave up
            if not live:
                continue
            try:
                outputs = await loop.run_in_executor(
                    self.executor, self.run_batch, [x for x, _ in live])
            except Exception as exc:  # the model's failure goes to every caller in it
                for _, future in live:
                    if not future.done():
                        future.set_exception(exc)
                continue
            for (_, future), output in zip(live, outputs, strict=True):
                if future.done():
                    continue
                if isinstance(output, Failed):
                    future.set_exception(output.error)
                else:
                    future.set_result(output)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        self.executor.shutdown(wait=False, cancel_futures=True)

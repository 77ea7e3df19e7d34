"""Micro-batching: concurrent single searches are decoded together.

Requests that arrive while a batch is on the engine wait in a queue; when it finishes, up to
``max_batch`` of them go as the next batch. A lone request therefore waits for nothing, and under load
the model sees full batches.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Generic, TypeVar

from genret.errors import DeadlineExceeded

Q = TypeVar("Q")
R = TypeVar("R")


class MicroBatcher(Generic[Q, R]):
    def __init__(self, run: Callable[[list[Q], float | None], list[R]], executor: Executor, max_batch: int) -> None:
        self._run = run
        self._executor = executor
        self._max_batch = max_batch
        self._queue: list[tuple[Q, float | None, asyncio.Future[R]]] = []
        self._draining = False

    async def submit(self, item: Q, deadline: float | None) -> R:
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[R] = loop.create_future()
        self._queue.append((item, deadline, fut))
        if not self._draining:
            self._draining = True
            loop.create_task(self._drain())
        return await fut

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._queue:
                batch, self._queue = self._queue[: self._max_batch], self._queue[self._max_batch :]
                now = time.monotonic()
                live = []
                for item, deadline, fut in batch:
                    if fut.done():  # the caller gave up (deadline or cancellation)
                        continue
                    if deadline is not None and deadline <= now:
                        fut.set_exception(DeadlineExceeded("deadline passed while queued"))
                        continue
                    live.append((item, deadline, fut))
                if not live:
                    continue
                deadlines = [d for _, d, _ in live]
                # Decoding stops early only when every request in the batch is past its deadline.
                batch_deadline = None if any(d is None for d in deadlines) else max(d for d in deadlines if d)
                try:
                    results = await loop.run_in_executor(
                        self._executor, self._run, [item for item, _, _ in live], batch_deadline)
                except Exception as exc:
                    for _, _, fut in live:
                        if not fut.done():
                            fut.set_exception(exc)
                    continue
                for (_, _, fut), res in zip(live, results, strict=True):
                    if not fut.done():
                        fut.set_result(res)
        finally:
            self._draining = False

"""Fair micro-batching: concurrent searches are decoded together, each tenant served in turn, and a tenant
that is not being served never waits for another tenant's batch to finish.

Every tenant's rows wait in the tenant's own queue. One engine thread takes batches of at most
``batch_rows`` rows, filled round-robin: one row from each waiting tenant in turn, the turn carrying over
from one batch to the next, so a tenant with a long queue gets one row per round like any other. When
tenants that were not in the batch just decoded are waiting, the next batch is theirs alone: a tenant
that arrives between two batches of a flooding one goes first, in a batch as short as its own rows.

Between two decoding steps of a batch the engine calls back (``checkpoint``). The waiting rows of
tenants that are in none of the batches in progress and have fewer rows in flight (waiting or being
decoded) than every tenant of the batch being decoded are decoded right there, as a batch of their own,
before the paused batch takes its next step. So a tenant that asks for less than another waits one
decoding step, not a whole batch, while that other floods the engine; the flooding tenant, having more in
flight than anyone, pauses nobody. Nesting is at most ``max_nesting`` batches deep.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from genret import tracing
from genret.errors import DeadlineExceeded, GenretError
from genret.types import Checkpoint

Q = TypeVar("Q")
R = TypeVar("R")


@dataclass
class _Row(Generic[Q, R]):
    tenant: str
    item: Q
    deadline: float | None
    future: asyncio.Future[R]
    loop: asyncio.AbstractEventLoop
    trace: Any = None  # the caller's trace context (None while tracing is off)

    def settle(self, result: R | None = None, error: BaseException | None = None) -> None:
        """Hand the outcome to the waiting caller, on its own event loop."""
        def settle() -> None:
            if self.future.done():  # the caller gave up meanwhile
                return
            if error is not None:
                self.future.set_exception(error)
            else:
                self.future.set_result(result)  # type: ignore[arg-type]

        self.loop.call_soon_threadsafe(settle)


class FairBatcher(Generic[Q, R]):
    def __init__(self, run: Callable[[list[Q], float | None, Checkpoint], list[R]], batch_rows: int,
                 max_nesting: int = 4) -> None:
        """``run(items, deadline, checkpoint)`` answers a batch, calling ``checkpoint`` between its steps; when
        it refuses a batch of several rows (a ``GenretError``: some row's request is bad), each row is run
        on its own, so only the bad ones fail."""
        if batch_rows < 1:
            raise ValueError("batch_rows must be at least 1")
        self._run = run
        self._batch_rows = batch_rows
        self._max_nesting = max_nesting
        self._cond = threading.Condition()
        self._queues: OrderedDict[str, deque[_Row[Q, R]]] = OrderedDict()  # waiting tenants, in turn order
        self._in_progress: list[set[str]] = []  # tenants of each batch being decoded, outermost first
        self._pending: dict[str, int] = {}  # tenant -> rows waiting or being decoded
        self._last: set[str] = set()  # tenants of the last batch decoded at the outermost level
        self._closed = False
        self._thread = threading.Thread(target=self._serve, name="genret-engine", daemon=True)
        self._thread.start()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    async def submit(self, tenant: str, item: Q, deadline: float | None) -> R:
        loop = asyncio.get_running_loop()
        with self._cond:
            if self._closed:
                raise RuntimeError("the server is shutting down")
            row: _Row[Q, R] = _Row(tenant, item, deadline, loop.create_future(), loop, tracing.capture())
            self._pending[tenant] = self._pending.get(tenant, 0) + 1
            self._queues.setdefault(tenant, deque()).append(row)
            self._cond.notify_all()
        return await row.future

    # --- engine thread -------------------------------------------------------------------------
    def _serve(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: bool(self._queues) or self._closed)
                if self._closed:
                    return
                batch = self._take(self._last) or self._take(set())
            self._last = {r.tenant for r in batch}
            self._decode(batch)

    def _checkpoint(self) -> None:
        """Between two steps of a batch: first decode the rows of lighter tenants in no batch in progress."""
        if len(self._in_progress) >= self._max_nesting:
            return
        with self._cond:
            below = min(self._pending[t] for t in self._in_progress[-1])
            batch = self._take(set().union(*self._in_progress), below)
        if batch:
            self._decode(batch)

    def _take(self, busy: set[str], below: int | None = None) -> list[_Row[Q, R]]:
        """Up to ``batch_rows`` rows round-robin over the waiting tenants not in ``busy`` (and with fewer
        than ``below`` rows in flight); a tenant served goes to the back of the turn order."""
        batch: list[_Row[Q, R]] = []
        while len(batch) < self._batch_rows:
            tenant = next((t for t in self._queues if t not in busy and (below is None or self._pending[t] < below)),
                          None)
            if tenant is None:
                break
            rows = self._queues[tenant]
            batch.append(rows.popleft())
            if rows:
                self._queues.move_to_end(tenant)
            else:
                del self._queues[tenant]
        return batch

    def _done(self, rows: list[_Row[Q, R]]) -> None:
        with self._cond:
            for r in rows:
                self._pending[r.tenant] -= 1
                if not self._pending[r.tenant]:
                    del self._pending[r.tenant]

    def _decode(self, batch: list[_Row[Q, R]]) -> None:
        try:
            self._decode_live(batch)
        finally:
            self._done(batch)

    def _decode_live(self, batch: list[_Row[Q, R]]) -> None:
        now = time.monotonic()
        live = []
        for row in batch:
            if row.future.done():  # the caller gave up (deadline or cancellation)
                continue
            if row.deadline is not None and row.deadline <= now:
                row.settle(error=DeadlineExceeded("deadline passed while queued"))
                continue
            live.append(row)
        if not live:
            return
        deadlines = [r.deadline for r in live]
        # Decoding stops early only when every request in the batch is past its deadline.
        batch_deadline = None if any(d is None for d in deadlines) else max(d for d in deadlines if d)
        self._in_progress.append({r.tenant for r in live})
        try:
            with tracing.batch([r.trace for r in live], len(live)):
                results: list[Any] = self._run([r.item for r in live], batch_deadline, self._checkpoint)
        except GenretError as exc:  # one row's request is bad: answer each row on its own
            if len(live) == 1:
                live[0].settle(error=exc)
            else:
                for r in live:
                    self._decode_one(r)
            return
        except Exception as exc:
            for r in live:
                r.settle(error=exc)
            return
        finally:
            self._in_progress.pop()
        for r, res in zip(live, results, strict=True):
            r.settle(res)

    def _decode_one(self, row: _Row[Q, R]) -> None:
        self._in_progress.append({row.tenant})
        try:
            with tracing.batch([row.trace], 1):
                row.settle(self._run([row.item], row.deadline, self._checkpoint)[0])
        except Exception as exc:
            row.settle(error=exc)
        finally:
            self._in_progress.pop()

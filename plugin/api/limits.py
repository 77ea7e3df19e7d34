"""Admission: caps on requests (RPCs) being served or queued, per tenant and overall.

A request counts once for each tenant it names, however many rows it has, so any batch within the batch
limit is admitted on an idle server. A request that finds its tenant at the cap waits, in arrival order,
up to ``wait_s`` for one of the tenant's slots (a slot is handed straight to the next waiter when it
frees), then gets RESOURCE_EXHAUSTED: a client that retries at once is slowed to one attempt per
``wait_s`` instead of spinning the server on refusals, and waiting costs the server nothing. At the overall
cap a request is refused at once. How admitted rows share the model is the fair batcher's job
(``genret.api.batcher``).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from genret.errors import ResourceExhausted
from genret.metrics import INFLIGHT, REJECTIONS, TENANTS


class TenantLimiter:
    """Counts in-flight requests per tenant. Used from one event loop (the server's)."""

    def __init__(self, per_tenant: int, total: int, wait_s: float = 1.0) -> None:
        if per_tenant < 1 or total < 1:
            raise ValueError("limits must be at least 1")
        self.per_tenant = per_tenant
        self.total = total
        self.wait_s = wait_s
        self._inflight: dict[str, int] = defaultdict(int)
        self._waiting: dict[str, deque[asyncio.Future[None]]] = defaultdict(deque)
        self._all = 0

    def inflight(self, tenant: str) -> int:
        return self._inflight.get(tenant, 0)

    async def _acquire(self, tenant: str, deadline: float) -> None:
        queue = self._waiting[tenant]
        if self._inflight[tenant] < self.per_tenant and not queue:
            self._inflight[tenant] += 1
            return
        loop = asyncio.get_running_loop()
        slot: asyncio.Future[None] = loop.create_future()
        queue.append(slot)
        try:
            await asyncio.wait_for(asyncio.shield(slot), max(0.0, deadline - loop.time()))
        except (TimeoutError, asyncio.CancelledError) as exc:
            if slot.done() and not slot.cancelled():
                self._release(tenant)  # the slot came as we gave up: pass it on
            else:
                slot.cancel()
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise ResourceExhausted(f"tenant '{tenant}' is at its limit of {self.per_tenant} requests in flight; "
                                    "retry later") from None

    def _release(self, tenant: str) -> None:
        queue = self._waiting.get(tenant)
        while queue:
            slot = queue.popleft()
            if not slot.done():
                slot.set_result(None)  # handed over: the count stays
                return
        if queue is not None and not queue:
            del self._waiting[tenant]
        self._inflight[tenant] -= 1
        if not self._inflight[tenant]:
            del self._inflight[tenant]

    @asynccontextmanager
    async def admit(self, tenants: Sequence[str]) -> AsyncIterator[None]:
        """Hold one slot of each tenant the request names, and one of the server."""
        if self._all + 1 > self.total:
            for t in set(tenants):
                REJECTIONS.labels(TENANTS(t)).inc()
            raise ResourceExhausted(f"the server is at its limit of {self.total} requests in flight; retry later")
        self._all += 1
        held: list[str] = []
        try:
            deadline = asyncio.get_running_loop().time() + self.wait_s
            for t in sorted(set(tenants)):  # one order for everyone: two batches cannot wait on each other
                try:
                    await self._acquire(t, deadline)
                except ResourceExhausted:
                    REJECTIONS.labels(TENANTS(t)).inc()
                    raise
                held.append(t)
                INFLIGHT.labels(TENANTS(t)).inc()
            yield
        finally:
            for t in held:
                self._release(t)
                INFLIGHT.labels(TENANTS(t)).dec()
            self._all -= 1

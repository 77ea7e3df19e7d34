"""Fairness: caps on requests being served or queued, per tenant and overall.

A tenant at its cap gets RESOURCE_EXHAUSTED at once instead of a longer queue, so one tenant's burst
cannot slow every other tenant; the overall cap bounds the queue.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from genret.errors import ResourceExhausted


class TenantLimiter:
    """Counts in-flight requests per tenant. Single-threaded use (the server's event loop)."""

    def __init__(self, per_tenant: int, total: int) -> None:
        if per_tenant < 1 or total < 1:
            raise ValueError("limits must be at least 1")
        self.per_tenant = per_tenant
        self.total = total
        self._inflight: dict[str, int] = defaultdict(int)
        self._all = 0

    def inflight(self, tenant: str) -> int:
        return self._inflight.get(tenant, 0)

    @contextmanager
    def admit(self, tenants: Sequence[str]) -> Iterator[None]:
        """Hold one slot for each tenant named (a batch naming a tenant twice holds two)."""
        want: dict[str, int] = defaultdict(int)
        for t in tenants:
            want[t] += 1
        if self._all + len(tenants) > self.total:
            raise ResourceExhausted(f"the server is at its limit of {self.total} requests in flight; retry later")
        for t, n in want.items():
            if self._inflight[t] + n > self.per_tenant:
                raise ResourceExhausted(f"tenant '{t}' is at its limit of {self.per_tenant} requests in flight; "
                                        "retry later")
        for t, n in want.items():
            self._inflight[t] += n
        self._all += len(tenants)
        try:
            yield
        finally:
            for t, n in want.items():
                self._inflight[t] -= n
                if not self._inflight[t]:
                    del self._inflight[t]
            self._all -= len(tenants)

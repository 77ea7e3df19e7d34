"""Taking turns between threads: a lock granted in arrival order, one holder at a time per tenant, and one
job at a time with tenants in turn.

``TurnLock`` serves callers in the order they asked, so one thread's long run of calls cannot keep
another waiting (``threading.Lock`` may hand the lock back to the thread that just released it, again and
again). ``TenantTurns`` runs one job at a time with the waiting tenants in turn: each tenant's jobs in
their order, one job per tenant per round, so a tenant with many jobs queued delays another's next job by
at most the one job in progress. Work cut into small jobs (the embedding of one document) is then shared
fairly however much of it one tenant sends, and each job has the whole CPU (two torch calls side by side
on a CPU slow each other down far more than taking turns does). ``Lanes`` gives each tenant a lock of its
own, held one at a time, kept only while it is held or waited for: naming ever more tenants grows nothing.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")


class TurnLock:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._next = 0  # next ticket to hand out
        self._serving = 0  # ticket whose turn it is

    def __enter__(self) -> None:
        with self._cond:
            ticket = self._next
            self._next += 1
            self._cond.wait_for(lambda: self._serving == ticket)

    def __exit__(self, *exc: object) -> None:
        with self._cond:
            self._serving += 1
            self._cond.notify_all()


@dataclass
class Lane:
    """One holder at a time (``lock``), and how many hold or wait for it (``users``): dropped at none."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    users: int = 0


L = TypeVar("L", bound=Lane)


class Lanes(Generic[L]):
    def __init__(self, make: Callable[[], L]) -> None:
        self._make = make  # a new lane's record: a Lane, or one that carries more about the tenant's turn
        self._lock = threading.Lock()
        self._lanes: dict[str, L] = {}  # tenants holding or waiting for their lane

    @contextmanager
    def hold(self, tenant: str) -> Iterator[L]:
        """The tenant's lane (its record), after whoever holds it now; other tenants' lanes go on beside it."""
        with self._lock:
            lane = self._lanes.get(tenant)
            if lane is None:
                lane = self._lanes[tenant] = self._make()
            lane.users += 1
        try:
            with lane.lock:
                yield lane
        finally:
            with self._lock:
                lane.users -= 1
                if not lane.users:
                    del self._lanes[tenant]

    def get(self, tenant: str) -> L | None:
        """The tenant's lane while it is held or waited for."""
        with self._lock:
            return self._lanes.get(tenant)

    def tenants(self) -> list[str]:
        """Tenants holding or waiting for their lane."""
        with self._lock:
            return list(self._lanes)

    def __len__(self) -> int:
        with self._lock:
            return len(self._lanes)


class TenantTurns:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._queues: OrderedDict[str, deque[object]] = OrderedDict()  # waiting tenants, in turn order
        self._busy = False

    def _is_next(self, ticket: object) -> bool:
        return not self._busy and next(iter(self._queues.values()))[0] is ticket

    def run(self, tenant: str, job: Callable[[], T]) -> T:
        """Run ``job`` in this thread when it is ``tenant``'s turn; its result."""
        ticket = object()
        with self._cond:
            self._queues.setdefault(tenant, deque()).append(ticket)
            self._cond.wait_for(lambda: self._is_next(ticket))
            queue = self._queues[tenant]
            queue.popleft()
            if queue:
                self._queues.move_to_end(tenant)
            else:
                del self._queues[tenant]
            self._busy = True
        try:
            return job()
        finally:
            with self._cond:
                self._busy = False
                self._cond.notify_all()

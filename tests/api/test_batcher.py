"""Fair micro-batching: per-tenant queues served round-robin, and a tenant with no batch in progress decoded
between the steps of another tenant's batch instead of after it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

from genret.api.batcher import FairBatcher


class Engine:
    """Runs each batch as ``steps`` steps with a checkpoint before each; the first batch waits at a gate."""

    def __init__(self, steps: int) -> None:
        self.steps = steps
        self.gate = threading.Event()
        self.log: list[str] = []

    def run(self, items: list[str], deadline: float | None, checkpoint: Callable[[], None]) -> list[str]:
        name = "+".join(items)
        self.gate.wait(10)
        for s in range(self.steps):
            checkpoint()
            self.log.append(f"{name}:{s}")
        return items


def serve(engine: Engine, first: str, rest: list[str], batch_rows: int) -> list[str]:
    """Submit ``first``, queue ``rest`` while it is held at the gate, then let everything run."""
    async def main() -> None:
        batcher: FairBatcher[str, str] = FairBatcher(engine.run, batch_rows)
        try:
            head = asyncio.ensure_future(batcher.submit(first[0], first, None))
            await asyncio.sleep(0.05)
            tail = [asyncio.ensure_future(batcher.submit(r[0], r, None)) for r in rest]
            await asyncio.sleep(0.05)
            engine.gate.set()
            assert await asyncio.gather(head, *tail) == [first, *rest]  # each caller gets its own row back
        finally:
            batcher.close()

    asyncio.run(main())
    return engine.log


def test_tenants_take_turns_in_batches_of_at_most_batch_rows() -> None:
    log = serve(Engine(steps=1), "a0", ["a1", "a2", "a3", "a4", "b0", "c0", "c1"], batch_rows=2)
    # b0 and c0 arrived while a0 was being decoded: run at its first step. After a0, c (not in a0's batch)
    # goes first, alone (a, waiting all along, does not pause it); then a's rows, two at a time.
    assert log == ["b0+c0:0", "a0:0", "c1:0", "a1+a2:0", "a3+a4:0"]


def test_a_waiting_tenant_is_decoded_between_the_steps_of_a_flooding_tenants_batch() -> None:
    log = serve(Engine(steps=3), "a0", ["a1", "a2", "b0"], batch_rows=4)
    assert log[:3] == ["b0:0", "b0:1", "b0:2"]  # b0 ran inside a0's first checkpoint, whole
    assert log[3:6] == ["a0:0", "a0:1", "a0:2"]  # a's own rows never pause a
    assert log[6:] == ["a1+a2:0", "a1+a2:1", "a1+a2:2"]

"""The shared pool of atomic docid numbers: each number names one document at a time, across tenants."""

from __future__ import annotations

import heapq
import threading
from collections import deque
from collections.abc import Iterable

from genret.errors import FailedPrecondition


class AtomicPool:
    """The numbers of an atomic index's docids (0..size-1), one model row each, shared by every tenant.

    A number is free, held by a document, or retired: freed by a delete published in snapshot ``epoch``
    while older snapshots, which searches in flight may still read, hold it. ``take`` first frees every
    retired number no pinned snapshot can hold (``oldest``: the oldest snapshot still read). Thread-safe.
    """

    def __init__(self, size: int, held: Iterable[int]) -> None:
        taken = set(held)
        self._free = [n for n in range(size) if n not in taken]  # ascending: already a heap
        self._retired: deque[tuple[int, int]] = deque()  # (epoch, number), epochs ascending
        self._lock = threading.Lock()

    def __len__(self) -> int:
        """Free numbers (retired ones not counted)."""
        return len(self._free)

    def take(self, count: int, oldest: int) -> list[int]:
        """The ``count`` smallest free numbers, or FailedPrecondition and none if there are fewer."""
        with self._lock:
            while self._retired and self._retired[0][0] <= oldest:
                heapq.heappush(self._free, self._retired.popleft()[1])
            if count > len(self._free):
                raise FailedPrecondition(
                    f"the index has {len(self._free)} free atomic docids and this write needs {count}: load the "
                    "documents into Qdrant and run `genret index --add`, which gives them new ones")
            return [heapq.heappop(self._free) for _ in range(count)]

    def give_back(self, numbers: Iterable[int]) -> None:
        """Numbers taken for a write that no snapshot ever held: free at once."""
        with self._lock:
            for n in numbers:
                heapq.heappush(self._free, n)

    def retire(self, numbers: Iterable[int], epoch: int) -> None:
        """Numbers whose documents are gone from snapshot ``epoch`` on."""
        with self._lock:
            self._retired.extend((epoch, n) for n in numbers)

"""Each tenant's BM25 over its own documents: the lexical list HYBRID and AUTO fuse with the other two.

A tenant's index is built from a tenant-filtered scroll of its points (title and text as Qdrant holds
them) when it is first needed, and dropped whenever the tenant's documents change, so it is built again.
The server builds it before a search joins a batch (``prepare``, in a worker thread), so a build holds
up only the tenant's own search, never the other tenants' searches decoded beside it. Term statistics
(document frequencies, average length) are the tenant's own: another tenant's documents never change a
tenant's lexical scores or ranks.

Built indexes are kept up to ``max_docs`` documents in all; past it the least recently used tenants'
indexes are dropped (and built again when next needed). A tenant larger than the cap keeps its own.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

import numpy as np

from genret.data.lexical import Bm25
from genret.store import QdrantStore


@dataclass(frozen=True)
class _Built:
    point_ids: tuple[str, ...]  # row i of the index is point_ids[i]
    bm25: Bm25 | None  # None: the tenant has no text to index


class LexicalIndexes:
    def __init__(self, store: QdrantStore, max_docs: int = 1_000_000) -> None:
        self._store = store
        self._max_docs = max_docs
        self._built: OrderedDict[str, _Built] = OrderedDict()  # least recently used first
        self._changes: dict[str, int] = {}  # tenant -> how many times its documents changed
        self._lock = threading.Lock()
        self._building: dict[str, threading.Lock] = {}

    def changed(self, tenant: str) -> None:
        """The tenant's documents changed: its index is rebuilt on its next search."""
        with self._lock:
            self._changes[tenant] = self._changes.get(tenant, 0) + 1
            self._built.pop(tenant, None)

    def prepare(self, tenant: str) -> None:
        """Build the tenant's index now if it is not built (a search then finds it ready)."""
        self._index(tenant)

    def ready(self, tenant: str) -> bool:
        """Whether the tenant's index is built (a search needs no build first)."""
        with self._lock:
            return tenant in self._built

    def held(self) -> dict[str, int]:
        """Documents in each tenant's built index."""
        with self._lock:
            return {t: len(b.point_ids) for t, b in self._built.items()}

    def search(self, tenant: str, text: str, k: int,
               within: Callable[[Sequence[str]], Collection[str]] | None = None) -> list[tuple[str, float]]:
        """The tenant's best ``k`` points for ``text`` with a positive BM25 score, best first; ``within``
        (given the tenant's point ids, the ones a filter keeps) limits them to a filter's points."""
        built = self._index(tenant)
        if built.bm25 is None or k <= 0:
            return []
        if within is None:
            rows, scores = built.bm25.top([text], k)
            pairs = zip(rows[0].tolist(), scores[0].tolist(), strict=True)
        else:
            keep = set(within(built.point_ids))
            mask = np.fromiter((pid in keep for pid in built.point_ids), dtype=bool, count=len(built.point_ids))
            every = np.where(mask, built.bm25.scores([text])[0], -np.inf)
            best = np.argsort(-every, kind="stable")[:k]
            pairs = zip(best.tolist(), every[best].tolist(), strict=True)
        return [(built.point_ids[r], float(s)) for r, s in pairs if s > 0]

    def _index(self, tenant: str) -> _Built:
        with self._lock:
            found = self._built.get(tenant)
            if found is not None:
                self._built.move_to_end(tenant)
                return found
            building = self._building.setdefault(tenant, threading.Lock())
        with building:  # one build per tenant at a time; other tenants are not held up
            with self._lock:
                found = self._built.get(tenant)
                seen = self._changes.get(tenant, 0)
            if found is not None:
                return found
            docs = [d for d in self._store.scroll_tenant(tenant) if f"{d.title} {d.text}".strip()]
            built = _Built(tuple(d.point_id for d in docs), _bm25([f"{d.title} {d.text}" for d in docs]))
            with self._lock:
                if self._changes.get(tenant, 0) == seen:  # not changed while it was read: keep it
                    self._built[tenant] = built
                    self._evict(tenant)
            return built

    def _evict(self, keep: str) -> None:
        """Drop the least recently used indexes (never ``keep``'s) until the cap holds. Under ``_lock``."""
        held = sum(len(b.point_ids) for b in self._built.values())
        for tenant in list(self._built):
            if held <= self._max_docs:
                break
            if tenant != keep:
                held -= len(self._built.pop(tenant).point_ids)


def _bm25(texts: list[str]) -> Bm25 | None:
    """BM25 over ``texts``; None when they hold no word to index (none, or stop words only)."""
    if not texts:
        return None
    try:
        return Bm25(texts)
    except ValueError:  # bm25s refuses an empty vocabulary
        return None


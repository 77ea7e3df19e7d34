"""Each tenant's BM25 over its own documents: the lexical list HYBRID and AUTO fuse with the other two.

A tenant's index is built from a tenant-filtered scroll of its points (title and text as Qdrant holds
them) when it is first needed, and dropped whenever the tenant's documents change, so it is built again.
The server builds it before a search joins a batch (``prepare``, in a worker thread), so a build holds
up only the tenant's own search, never the other tenants' searches decoded beside it. Term statistics
(document frequencies, average length) are the tenant's own: another tenant's documents never change a
tenant's lexical scores or ranks.

Built indexes are held up to ``max_docs`` documents in all, and what happens to one tenant's index depends on
that tenant alone: it is dropped when the tenant's documents change or when the tenant has not searched for
``idle_s`` seconds, and another tenant's build never pushes it out. A build that does not fit beside the
indexes held (or is larger than the cap) is held only while its tenant has searches in flight (``using``),
so only that tenant's later searches pay to build it again; until one of its builds fits (or for ``idle_s``
after the last that did not), the tenant ``overflows`` and the server runs its builds in a lane of their own
(see the API layer's servicer). What is kept about a tenant outlives neither its index, its searches in
flight and its builds, nor ``idle_s`` after its last build that did not fit: naming ever more tenants grows
nothing here.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from genret.data.lexical import Bm25
from genret.metrics import LEXICAL_BUILDS, LEXICAL_DOCS
from genret.store import QdrantStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Built:
    point_ids: tuple[str, ...]  # row i of the index is point_ids[i]
    bm25: Bm25 | None  # None: the tenant has no text to index


@dataclass
class _Build:
    """A tenant's build in progress, and the searches waiting for it to finish."""

    lock: threading.Lock = field(default_factory=threading.Lock)  # one build per tenant at a time
    waiting: int = 0  # builders holding or waiting for the lock; the entry goes when none is left
    stale: bool = False  # the tenant's documents changed after the build began to read them


class LexicalIndexes:
    def __init__(self, store: QdrantStore, max_docs: int = 1_000_000, idle_s: float = 600.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._store = store
        self._max_docs = max_docs
        self._idle_s = idle_s
        self._clock = clock
        self._built: dict[str, _Built] = {}  # held within the cap
        self._used: dict[str, float] = {}  # tenant -> when it last searched its held index (clock seconds)
        self._docs = 0  # documents in the indexes held within the cap
        self._leased: dict[str, _Built] = {}  # did not fit: held while the tenant has searches in flight
        self._users: dict[str, int] = {}  # tenant -> its searches in flight
        self._overflowing: dict[str, float] = {}  # tenant -> when its last build was not kept (clock seconds)
        self._lock = threading.Lock()
        self._building: dict[str, _Build] = {}

    def changed(self, tenant: str) -> None:
        """The tenant's documents changed: its index is rebuilt on its next search."""
        with self._lock:
            build = self._building.get(tenant)
            if build is not None:
                build.stale = True
            self._drop(tenant)
            self._leased.pop(tenant, None)

    @contextmanager
    def using(self, tenant: str) -> Iterator[None]:
        """One search of the tenant in flight: an index of its that did not fit is held until none is."""
        with self._lock:
            self._users[tenant] = self._users.get(tenant, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                self._users[tenant] -= 1
                if not self._users[tenant]:
                    del self._users[tenant]
                    self._leased.pop(tenant, None)

    def prepare(self, tenant: str) -> None:
        """Build the tenant's index now if it is not built (a search then finds it ready)."""
        self._index(tenant)

    def ready(self, tenant: str) -> bool:
        """Whether the tenant's index is built (a search needs no build first)."""
        with self._lock:
            self._expire(tenant)
            return tenant in self._built or tenant in self._leased

    def overflows(self, tenant: str) -> bool:
        """Whether the tenant's last build, less than ``idle_s`` ago, did not fit under the cap (so its next one
        is likely not to)."""
        with self._lock:
            self._forget_overflows()
            return tenant in self._overflowing

    def tracked(self) -> int:
        """Tenants anything is kept about: an index, a search in flight, a build, a recent overflow."""
        with self._lock:
            self._expire(*self._built)
            self._forget_overflows()
            return len({*self._built, *self._leased, *self._users, *self._building, *self._overflowing})

    def held(self) -> dict[str, int]:
        """Documents in each tenant's index held within the cap."""
        with self._lock:
            self._expire(*self._built)
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
            found = self._use(tenant)
            if found is not None:
                return found
            build = self._building.setdefault(tenant, _Build())
            build.waiting += 1
        try:
            with build.lock:  # one build per tenant at a time; other tenants are not held up
                with self._lock:
                    found = self._use(tenant)
                    build.stale = False
                if found is not None:
                    return found
                docs = [d for d in self._store.scroll_tenant(tenant) if f"{d.title} {d.text}".strip()]
                built = _Built(tuple(d.point_id for d in docs), _bm25([f"{d.title} {d.text}" for d in docs]))
                with self._lock:
                    if not build.stale:  # not changed while it was read: hold it
                        self._hold(tenant, built)
                return built
        finally:
            with self._lock:
                build.waiting -= 1
                if not build.waiting:
                    del self._building[tenant]

    def _use(self, tenant: str) -> _Built | None:
        """The tenant's held index (marked used now), else its leased one, else None. Under ``_lock``."""
        self._expire(tenant)
        found = self._built.get(tenant)
        if found is not None:
            self._used[tenant] = self._clock()
            return found
        return self._leased.get(tenant)

    def _hold(self, tenant: str, built: _Built) -> None:
        """Hold ``built`` within the cap if it fits beside the indexes held (no other tenant's is dropped for
        it), else while the tenant has searches in flight. Under ``_lock``."""
        self._expire(*self._built)  # idle indexes leave room first
        held = self._docs
        kept = held + len(built.point_ids) <= self._max_docs
        LEXICAL_BUILDS.labels(kept="yes" if kept else "no").inc()
        self._forget_overflows()
        if kept:
            self._overflowing.pop(tenant, None)
            self._built[tenant], self._used[tenant] = built, self._clock()
            self._docs += len(built.point_ids)
            LEXICAL_DOCS.set(self._docs)
            return
        log.warning("the lexical index of tenant %s (%d documents) is not kept: %d of GENRET_LEXICAL_MAX_DOCS=%d "
                    "are held; it is built again for the tenant's next searches", tenant, len(built.point_ids), held,
                    self._max_docs)
        self._overflowing[tenant] = self._clock()
        if self._users.get(tenant):
            self._leased[tenant] = built

    def _forget_overflows(self) -> None:
        """Forget the overflows older than ``idle_s``. Under ``_lock``."""
        now = self._clock()
        for tenant in [t for t, when in self._overflowing.items() if now - when > self._idle_s]:
            del self._overflowing[tenant]

    def _expire(self, *tenants: str) -> None:
        """Drop those of the tenants' indexes unused for more than ``idle_s``. Under ``_lock``."""
        now = self._clock()
        for tenant in [t for t in tenants if t in self._built and now - self._used[t] > self._idle_s]:
            self._drop(tenant)

    def _drop(self, tenant: str) -> None:
        """Let the tenant's held index go, if it has one. Under ``_lock``."""
        built = self._built.pop(tenant, None)
        if built is not None:
            del self._used[tenant]
            self._docs -= len(built.point_ids)
            LEXICAL_DOCS.set(self._docs)


def _bm25(texts: list[str]) -> Bm25 | None:
    """BM25 over ``texts``; None when they hold no word to index (none, or stop words only)."""
    if not texts:
        return None
    try:
        return Bm25(texts)
    except ValueError:  # bm25s refuses an empty vocabulary
        return None


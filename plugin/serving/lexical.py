"""Each tenant's BM25 over its own documents: the lexical list HYBRID and AUTO fuse with the other two.

A tenant's index is built from a tenant-filtered scroll of its points (title and text as Qdrant holds
them) when it is first needed. The tenant's writes then change it in place (``changed`` with the texts
written and the points removed): a write indexes only its own documents, never reads Qdrant and never
rebuilds, and every score stays the one a fresh build would give (``WritableBm25``). A change whose texts
are not known (a tenant re-read from Qdrant) drops the index, so it is built again.

The server builds an index before a search joins a batch (``prepare``, in a worker thread), so a build
holds up only the tenant's own search, never the other tenants' searches decoded beside it. What a
search's preparation built stays with the search until it is served (``using``), even if a change drops
the index meanwhile, so a batch never waits for a build. The tokenizing and indexing can run in worker
processes (``processes``), so a build, or the tokenizing of a large write, does not hold the server's
interpreter lock. A tenant's work takes one worker at a time, so one tenant's build and large write never
hold every worker while another tenant's build waits. Term statistics (document frequencies, average
length) are the tenant's own: another tenant's documents never change a tenant's lexical scores or ranks.

What happens to a tenant's index depends on that tenant alone. A tenant with up to ``max_docs`` points
has its index built and held until a change drops it, its writes take it over the limit, or it has not
searched for ``idle_s`` seconds; no other tenant's builds, sizes, writes or searches push it out or keep
it from being held. A tenant with more points is refused (``ResourceExhausted``, after counting them,
never reading them; the count is kept until its next change or for ``idle_s``), and its searches that
leave the lexical list out are served as before. So the indexes held are never more than the documents of
the tenants that searched within ``idle_s``, each at most ``max_docs``. What is kept about a tenant
outlives neither ``idle_s`` nor its searches and builds in flight: naming ever more tenants grows
nothing.
"""

from __future__ import annotations

import logging
import multiprocessing
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import islice
from typing import TypeVar

from genret.data.writable_bm25 import WritableBm25, tokenized
from genret.errors import ResourceExhausted
from genret.metrics import LEXICAL_BUILDS, LEXICAL_CHANGES, LEXICAL_DOCS
from genret.store import QdrantStore
from genret.turns import Lane, Lanes

log = logging.getLogger(__name__)
_TOKENIZE_HERE_CHARS = 100_000  # a write with more text is tokenized in a worker process, when there are any
_T = TypeVar("_T")
_R = TypeVar("_R")


@dataclass
class _Build(Lane):
    """A tenant's build in progress (one at a time), and the searches waiting for it to finish."""

    stale: bool = False  # the tenant's documents changed after the build began to read them


class LexicalIndexes:
    def __init__(self, store: QdrantStore, max_docs: int = 1_000_000, idle_s: float = 600.0,
                 clock: Callable[[], float] = time.monotonic, processes: int = 0) -> None:
        self._store = store
        self._processes = processes  # worker processes that build indexes; 0: the calling thread
        self._max_docs = max_docs  # points one tenant may have for its index to be built
        self._idle_s = idle_s
        self._clock = clock
        self._built: dict[str, WritableBm25] = {}  # held until a change drops it or the tenant idles
        self._used: dict[str, float] = {}  # tenant -> when it last searched its held index (clock seconds)
        self._counted: dict[str, int] = {}  # tenant -> documents of its held index, as last added to _docs
        self._docs = 0  # documents in the indexes held
        self._pinned: dict[str, WritableBm25] = {}  # tenant -> the index its searches in flight last prepared
        self._users: dict[str, int] = {}  # tenant -> its searches in flight
        self._lock = threading.Lock()
        self._building = Lanes(_Build)  # tenants whose build runs or waits, one at a time each
        self._refused: dict[str, tuple[int, float]] = {}  # tenant over the limit -> its count, when counted

    def changed(self, tenant: str, written: Sequence[tuple[str, str]] | None = None,
                removed: Sequence[str] = ()) -> None:
        """The tenant's documents changed, and Qdrant holds the change: ``written`` (point id, title and text)
        and ``removed`` (point ids) go into its held index in place. With ``written`` None (what changed is
        not known), or while its index is being built, the index is dropped and built on its next search
        (the searches in flight keep the one they prepared). A tenant's changes come one at a time."""
        with self._lock:
            build = self._building.get(tenant)
            if build is not None:
                build.stale = True
            self._refused.pop(tenant, None)
            held = self._built.get(tenant) if build is None else None
            if written is None or held is None:
                if build is not None or tenant in self._built:
                    LEXICAL_CHANGES.labels(how="dropped").inc()
                self._drop(tenant)
                return
        try:  # outside the lock: only this tenant's changes reach its index, and searches read it meanwhile
            large = sum(len(t) for _, t in written) > _TOKENIZE_HERE_CHARS
            held.write(_BUILDERS.run(tokenized, written, self._processes, tenant) if large else written, removed)
        except Exception:
            log.exception("could not change the lexical index of tenant '%s' in place; it is built again", tenant)
            LEXICAL_CHANGES.labels(how="dropped").inc()
            with self._lock:
                self._drop(tenant)
            return
        size = held.size
        over = size > self._max_docs
        LEXICAL_CHANGES.labels(how="dropped" if over else "in_place").inc()
        with self._lock:
            if self._built.get(tenant) is held:
                if over:
                    self._drop(tenant)  # its next search counts it and is refused
                else:
                    self._count(tenant, size)

    @contextmanager
    def using(self, tenant: str) -> Iterator[None]:
        """One search of the tenant in flight: the index its preparation built is kept for it until the
        tenant has no search in flight."""
        with self._lock:
            self._users[tenant] = self._users.get(tenant, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                self._users[tenant] -= 1
                if not self._users[tenant]:
                    del self._users[tenant]
                    self._pinned.pop(tenant, None)

    def prepare(self, tenant: str) -> None:
        """Build the tenant's index now if it is not built (a search then finds it ready); ResourceExhausted
        if the tenant has more than ``max_docs`` points."""
        self._index(tenant, fresh=True)

    def ready(self, tenant: str) -> bool:
        """Whether the tenant's index is held, so a new search needs no build first (it is then kept for the
        tenant's searches in flight, as ``prepare`` keeps the one it builds)."""
        with self._lock:
            self._expire(tenant)
            found = self._built.get(tenant)
            if found is not None and tenant in self._users:
                self._pinned[tenant] = found
            return found is not None

    def tracked(self) -> int:
        """Tenants anything is kept about: an index, a search in flight, a build, a refusal."""
        with self._lock:
            self._expire(*self._built)
            now = self._clock()
            for tenant in [t for t, (_, when) in self._refused.items() if now - when > self._idle_s]:
                del self._refused[tenant]
            return len({*self._built, *self._pinned, *self._users, *self._building.tenants(), *self._refused})

    def held(self) -> dict[str, int]:
        """Documents in each tenant's index held."""
        with self._lock:
            self._expire(*self._built)
            return {t: b.size for t, b in self._built.items()}

    def search(self, tenant: str, text: str, k: int,
               within: Callable[[Sequence[str]], Collection[str]] | None = None) -> list[tuple[str, float]]:
        """The tenant's best ``k`` points for ``text`` with a positive BM25 score, best first; ``within``
        (given the tenant's point ids, the ones a filter keeps) limits them to a filter's points."""
        return self._index(tenant, fresh=False).top(text, k, within)

    def _index(self, tenant: str, fresh: bool) -> WritableBm25:
        """The tenant's held index, else (unless ``fresh``: a new search sees the tenant's latest writes) the
        one its searches in flight prepared, else a new build; kept for the tenant's searches in flight."""
        with self._lock:
            found = self._held(tenant) or (None if fresh else self._pinned.get(tenant))
        built = found if found is not None else self._build_once(tenant)
        with self._lock:
            if tenant in self._users:
                self._pinned[tenant] = built
        return built

    def _build_once(self, tenant: str) -> WritableBm25:
        """Build the tenant's index, or take the one a build it waited for has just held."""
        with self._building.hold(tenant) as build:  # one build per tenant at a time; other tenants go on
            with self._lock:
                found = self._held(tenant)
                build.stale = False
            if found is not None:
                return found
            built = self._build(tenant)
            with self._lock:
                if not build.stale:  # not changed while it was read: hold it
                    self._hold(tenant, built)
            return built

    def _build(self, tenant: str) -> WritableBm25:
        """The tenant's index, read from Qdrant; ResourceExhausted (its points counted, not read) if it has
        more than ``max_docs`` points. A count over the limit is remembered until the tenant's next change
        or for ``idle_s``, so its searches that keep asking are refused without counting again."""
        with self._lock:
            now, known = self._clock(), self._refused.get(tenant)
        remembered = known[0] if known is not None and now - known[1] <= self._idle_s else None
        fresh = remembered is None
        points = self._store.count_tenant(tenant) if remembered is None else remembered
        docs = [] if points > self._max_docs else list(islice(self._store.scroll_tenant(tenant), self._max_docs + 1))
        points = max(points, len(docs))  # written meanwhile, it may have more than counted
        if points > self._max_docs:
            LEXICAL_BUILDS.labels(outcome="refused").inc()
            with self._lock:
                build = self._building.get(tenant)
                if fresh and not (build is not None and build.stale):  # not changed while counted
                    self._refused[tenant] = (points, now)
            raise ResourceExhausted(
                f"tenant '{tenant}' has {points:,} documents, more than the {self._max_docs:,} its lexical (BM25) index "
                "may hold (GENRET_LEXICAL_TENANT_MAX_DOCS): search without the lexical list (without_lexical, or a "
                "mode or fusion that does not read it), or raise the limit")
        texts = [(d.point_id, f"{d.title} {d.text}") for d in docs if f"{d.title} {d.text}".strip()]
        return _BUILDERS.run(WritableBm25, texts, self._processes, tenant)

    def _held(self, tenant: str) -> WritableBm25 | None:
        """The tenant's held index (marked used now), unless it idled out. Under ``_lock``."""
        self._expire(tenant)
        found = self._built.get(tenant)
        if found is not None:
            self._used[tenant] = self._clock()
        return found

    def _hold(self, tenant: str, built: WritableBm25) -> None:
        """Hold the tenant's new index. Under ``_lock``."""
        LEXICAL_BUILDS.labels(outcome="held").inc()
        self._built[tenant], self._used[tenant] = built, self._clock()
        self._count(tenant, built.size)

    def _count(self, tenant: str, docs: int) -> None:
        """The tenant's held index now has ``docs`` documents (0: none is held). Under ``_lock``."""
        self._docs += docs - self._counted.pop(tenant, 0)
        if docs:
            self._counted[tenant] = docs
        LEXICAL_DOCS.set(self._docs)

    def _expire(self, *tenants: str) -> None:
        """Drop those of the tenants' indexes unused for more than ``idle_s``. Under ``_lock``."""
        now = self._clock()
        for tenant in [t for t in tenants if t in self._built and now - self._used[t] > self._idle_s]:
            self._drop(tenant)

    def _drop(self, tenant: str) -> None:
        """Let the tenant's held index go, if it has one. Under ``_lock``."""
        if self._built.pop(tenant, None) is not None:
            del self._used[tenant]
            self._count(tenant, 0)


class _Builders:
    """Worker processes that tokenize and index (one pool in a process, made on first use), so a tenant's
    build never holds this interpreter's lock, which the engine's decoding and the server's event loop
    need: a build costs the server the index's unpickling, not its making. A tenant's work runs in one
    worker at a time (its lane), so the other workers stay free for the other tenants."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pool: ProcessPoolExecutor | None = None
        self._lanes = Lanes(Lane)  # tenants with work running or waiting; none is kept after

    def run(self, work: Callable[[_T], _R], arg: _T, processes: int, tenant: str) -> _R:
        """``work(arg)`` for ``tenant`` in one of ``processes`` worker processes (0: in the calling thread),
        after the tenant's work already running there."""
        if processes <= 0:
            return work(arg)
        with self._lanes.hold(tenant):
            with self._lock:
                if self._pool is None:
                    self._pool = ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn"))
                pool = self._pool
            try:
                return pool.submit(work, arg).result()
            except BrokenProcessPool:  # a worker died (killed, out of memory): a new pool for the next build
                with self._lock:
                    if self._pool is pool:
                        self._pool = None
                log.warning("a lexical index process died; this work runs in the server, the next in a new one")
                return work(arg)

    def lanes(self) -> int:
        """Tenants with work running or waiting."""
        return len(self._lanes)

    def close(self) -> None:
        """Stop the worker processes (a later run starts new ones)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown()


_BUILDERS = _Builders()

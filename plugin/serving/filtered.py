"""Filters inside decoding: a query's tenant namespace restricted to the points that match its filter.

A filter is resolved in Qdrant to the tenant's matching points (one paged scroll of ids, the tenant
condition ANDed in), and the tenant's trie is restricted to their docids: either rebuilt over only them
(selective filters) or kept with its live counts recounted under the filter (broad ones), so beam search
never expands a prefix that has no matching document below it, and every beam is spent on matching
documents. The restricted trie decodes with the tenant's own normaliser (on an atomic index, the
tenant's tokens), so a matching document scores exactly as it does unfiltered (with vocab scoring).
Rows of one batch may carry different filters: each decodes in a trie of its own, and small tries are
packed into one forest per batch as tenants' are. The kernels read the restricted trie's live counts as
they read any trie's: the trie is the per-row mask.

Restricted tries are cached per (tenant, filter, version) for at most ``CACHE_TTL_S``, where the version
is the snapshot epoch in which the tenant's documents last changed: a write of the tenant through the
sidecar makes a new version, so no cached trie outlives the documents it was built from, and a payload
change made in Qdrant directly shows within the TTL. What happens to one tenant's cached tries depends on
that tenant alone: its own writes, its own filters and the TTL. A tenant keeps at most ``TENANT_SHARE``
tries, together at most ``TENANT_NODES`` times the nodes of its own trie (its least recently used go
first), so what is cached is bounded by the tenants' own tries, no bound is shared between tenants, and
another tenant's writes or filters never push a tenant's tries out or keep its new one from being kept.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from genret.serving.namespaces import Namespace, Part, build_namespace
from genret.serving.served import ServedTrie, served_trie
from genret.store import QdrantStore, parse_filter
from genret.types import PointId

TENANT_SHARE = 16  # cached filters one tenant may hold: its own many filters evict its own, not everyone's
TENANT_NODES = 4  # ... holding together at most this many times the nodes of the tenant's own trie
CACHE_TTL_S = 5.0
COUNT_SHARE = 0.05  # filters keeping at least this share of a tenant recount live counts instead of rebuilding


@dataclass(frozen=True)
class Restricted:
    """A tenant's namespace and trie under one filter (both None: no document of the tenant matches)."""

    ns: Namespace | None
    served: ServedTrie | None
    matching: int
    built: float = 0.0  # time.monotonic() when it was built

    @property
    def nodes(self) -> int:
        """Trie nodes it holds (a recount holds the tenant's whole trie again, a rebuild only the matching)."""
        return self.ns.num_nodes if self.ns is not None else 0


def _rows(part: Part, match: set[PointId]) -> np.ndarray:
    """The part's live rows among ``match``, in leaf order: O(matching points), not O(tenant)."""
    rows = [r for pid in match if (r := part.row(pid)) is not None]
    return np.sort(np.asarray(rows, dtype=np.int64))


def restrict(ns: Namespace, match: set[PointId], device: torch.device, atomic: bool, how: str = "auto") -> Restricted:
    """``ns`` cut down to the points in ``match``, ready for decoding, one of two ways (``how``):

    * ``rebuild``: a new trie over only the matching docids, in proportion to the matching points;
    * ``count``: the same tries with their live counts recounted under the filter (subtree counts of the
      matching leaves, ``TrieForest.counted``), in proportion to the tenant's trie, vectorised;

    ``auto`` rebuilds when fewer than ``COUNT_SHARE`` of the tenant's documents match, and recounts
    otherwise (the crossover measured by ``integration/bench/bench_filters.py --synthetic``)."""
    rows = [_rows(part, match) for part in ns.parts]
    matching = sum(len(r) for r in rows)
    if matching == 0:
        return Restricted(None, None, 0)
    if how == "auto":
        how = "count" if matching >= COUNT_SHARE * len(ns) else "rebuild"
    if how == "count":
        parts = []
        for part, r in zip(ns.parts, rows, strict=True):
            alive = np.zeros_like(part.alive)
            alive[r] = True
            parts.append(Part(part.forest.counted(r), part.point_ids, part.docids, part.tokens, alive, part.index))
        sub: Namespace | None = Namespace(ns.tenant, parts[0], parts[1] if len(parts) > 1 else None)
    else:
        sub = build_namespace(ns.tenant, [p.point_ids[i] for p, r in zip(ns.parts, rows, strict=True) for i in r.tolist()],
                              [p.docids[i] for p, r in zip(ns.parts, rows, strict=True) for i in r.tolist()],
                              np.concatenate([p.tokens[r] for p, r in zip(ns.parts, rows, strict=True)]))
    assert sub is not None
    return Restricted(sub, served_trie(sub, device, atomic, own_tokens=ns.first_tokens()), matching)


class FilteredTries:
    """Restricted tries by (tenant, filter, version), each for at most ``CACHE_TTL_S``: of one tenant's, at
    most ``TENANT_SHARE``, with at most ``TENANT_NODES`` times its own trie's nodes between them."""

    def __init__(self, store: QdrantStore, device: Callable[[], torch.device], atomic: bool) -> None:
        self._store = store
        self._device = device
        self._atomic = atomic
        # tenant -> its tries by (filter, version), least recently used first
        self._cache: dict[str, OrderedDict[tuple[str, int], Restricted]] = {}
        self._swept = time.monotonic()
        self._lock = threading.Lock()

    def get(self, ns: Namespace, flt: dict[str, Any], version: int) -> Restricted:
        """``ns`` restricted to the points of ``flt``; ``version``: the epoch in which the tenant's documents
        last changed."""
        key = (json.dumps(flt, sort_keys=True), version)
        with self._lock:
            mine = self._cache.get(ns.tenant)
            hit = mine.get(key) if mine is not None else None
            if mine is not None and hit is not None and time.monotonic() - hit.built < CACHE_TTL_S:
                mine.move_to_end(key)
                return hit
        now = time.monotonic()
        match = self._store.matching(ns.tenant, parse_filter(flt))
        out = dataclasses.replace(restrict(ns, match, self._device(), self._atomic), built=now)
        with self._lock:
            self._sweep()
            mine = self._cache.setdefault(ns.tenant, OrderedDict())
            mine.pop(key, None)
            budget, held = TENANT_NODES * ns.num_nodes, sum(r.nodes for r in mine.values())
            while mine and (len(mine) + 1 > TENANT_SHARE or held + out.nodes > budget):
                held -= mine.popitem(last=False)[1].nodes
            mine[key] = out  # it fits now: a restriction has at most the tenant's own nodes
        return out

    def cached(self) -> dict[str, int]:
        """Tries each tenant has cached."""
        with self._lock:
            return {tenant: len(mine) for tenant, mine in self._cache.items() if mine}

    def _sweep(self) -> None:
        """Drop the tries older than the TTL, at most once per TTL, so a miss reads only its own tenant's
        tries otherwise. Under ``_lock``."""
        now = time.monotonic()
        if now - self._swept < CACHE_TTL_S:
            return
        self._swept, late = now, now - CACHE_TTL_S
        for tenant in list(self._cache):
            mine = self._cache[tenant]
            for key in [k for k, r in mine.items() if r.built <= late]:
                del mine[key]
            if not mine:
                del self._cache[tenant]

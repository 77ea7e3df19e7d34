"""Filters inside decoding: a query's tenant namespace restricted to the points that match its filter.

A filter is resolved in Qdrant to the tenant's matching points (one paged scroll of ids, the tenant
condition ANDed in), and the tenant's trie is rebuilt over only their docids: a trie with no path to a
document outside the filter, so beam search never expands a prefix that has no matching document below
it, and every beam is spent on matching documents. The restricted trie decodes with the tenant's own
normaliser (on an atomic index, the tenant's tokens), so a matching document scores exactly as it does
unfiltered. Rows of one batch may carry different filters: each is a trie of its own, and small tries are
packed into one forest per batch as tenants' are. Kernels are unchanged: the trie is the mask.

Restricted tries are cached per (tenant, filter, snapshot epoch) in a bounded LRU for at most
``CACHE_TTL_S``: a write through the sidecar publishes a new epoch, so no cached trie outlives the
documents it was built from, and a payload change made in Qdrant directly shows within the TTL.
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

CACHE_SIZE = 64
CACHE_TTL_S = 5.0


@dataclass(frozen=True)
class Restricted:
    """A tenant's namespace and trie under one filter (both None: no document of the tenant matches)."""

    ns: Namespace | None
    served: ServedTrie | None
    matching: int
    built: float = 0.0  # time.monotonic() when it was built


def _rows(part: Part, match: set[PointId]) -> np.ndarray:
    """The part's live rows among ``match``, in leaf order: O(matching points), not O(tenant)."""
    rows = [r for pid in match if (r := part.row(pid)) is not None]
    return np.sort(np.asarray(rows, dtype=np.int64))


def restrict(ns: Namespace, match: set[PointId], device: torch.device, atomic: bool) -> Restricted:
    """``ns`` cut down to the points in ``match``, ready for decoding."""
    pids: list[PointId] = []
    docids: list[str] = []
    tokens: list[np.ndarray] = []
    for part in ns.parts:
        rows = _rows(part, match)
        pids += [part.point_ids[r] for r in rows.tolist()]
        docids += [part.docids[r] for r in rows.tolist()]
        tokens.append(part.tokens[rows])
    sub = build_namespace(ns.tenant, pids, docids, np.concatenate(tokens)) if pids else None
    if sub is None:
        return Restricted(None, None, 0)
    return Restricted(sub, served_trie(sub, device, atomic, own_tokens=ns.first_tokens()), len(pids))


class FilteredTries:
    """Restricted tries by (tenant, filter, epoch), the ``CACHE_SIZE`` most recently used kept, each for
    at most ``CACHE_TTL_S``."""

    def __init__(self, store: QdrantStore, device: Callable[[], torch.device], atomic: bool) -> None:
        self._store = store
        self._device = device
        self._atomic = atomic
        self._cache: OrderedDict[tuple[str, str, int], Restricted] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, ns: Namespace, flt: dict[str, Any], epoch: int) -> Restricted:
        key = (ns.tenant, json.dumps(flt, sort_keys=True), epoch)
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and time.monotonic() - hit.built < CACHE_TTL_S:
                self._cache.move_to_end(key)
                return hit
        now = time.monotonic()
        match = self._store.matching(ns.tenant, parse_filter(flt))
        out = dataclasses.replace(restrict(ns, match, self._device(), self._atomic), built=now)
        with self._lock:
            self._cache[key] = out
            while len(self._cache) > CACHE_SIZE:
                self._cache.popitem(last=False)
        return out

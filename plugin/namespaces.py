"""Tenant namespaces: the trie forest plus what each leaf stands for, rebuilt from Qdrant payloads."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from genret.docids import DocidCodec
from genret.store import PointId, QdrantStore
from genret.trie import TrieForest, build_forest


@dataclass(frozen=True)
class Namespaces:
    """An immutable snapshot: forest + per-leaf point ids and docid strings, indexed by leaf rank."""

    forest: TrieForest
    point_ids: tuple[PointId, ...]  # indexed by forest.leaf_rank(leaf)
    docids: tuple[str, ...]
    tenant_of: np.ndarray  # (leaves,) tenant index of each leaf
    counts: Mapping[str, int]

    def has(self, tenant: str) -> bool:
        return tenant in self.counts

    def root(self, tenant: str) -> int:
        return self.forest.root_of(tenant)


def build_namespaces(codec: DocidCodec, entries: Mapping[str, Sequence[tuple[PointId, str]]]) -> Namespaces:
    """entries: tenant -> [(point id, docid string)]."""
    tenants = sorted(entries)
    pids: list[PointId] = []
    docids: list[str] = []
    tenant_idx: list[int] = []
    for t, items in enumerate(tenants):
        for pid, docid in entries[items]:
            pids.append(pid)
            docids.append(docid)
            tenant_idx.append(t)
    tokens = codec.encode_many(docids) if docids else np.zeros((0, codec.max_length + 1), dtype=np.int64)
    tenant_arr = np.asarray(tenant_idx, dtype=np.int64)
    forest, rows = build_forest(tenants, tenant_arr, tokens)
    return Namespaces(forest, tuple(pids[i] for i in rows), tuple(docids[i] for i in rows), tenant_arr[rows],
                      {t: len(entries[t]) for t in tenants})


def load_namespaces(store: QdrantStore, codec: DocidCodec) -> Namespaces:
    """Every tenant's (point, docid) pairs as Qdrant holds them: the source of truth.

    Tenants whose points carry no docid yet (loaded after the last indexing) have no namespace.
    """
    entries = {t: store.docids_of_tenant(t) for t in store.tenants()}
    return build_namespaces(codec, {t: items for t, items in entries.items() if items})

"""Tenant namespaces: the trie forest plus what each leaf stands for, rebuilt from Qdrant payloads.

A ``Namespaces`` value is immutable. A change (``apply``) builds a new one from the old rows plus the
added ones minus the removed ones, and the engine swaps one reference: a search in flight keeps the
snapshot it started with, so it sees the old state or the new state, never a mix.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from genret.decoding.trie import TrieForest, build_forest
from genret.docids import EOS, EVERY_TENANT, PAD, DocidCodec
from genret.store import QdrantStore
from genret.types import PointId


@dataclass(frozen=True)
class Namespaces:
    """An immutable snapshot: forest + per-leaf point ids, docids, tenants and tokens, by leaf rank."""

    forest: TrieForest
    point_ids: tuple[PointId, ...]  # indexed by forest.leaf_rank(leaf)
    docids: tuple[str, ...]
    tenant_of: np.ndarray  # (leaves,) index into forest.tenants
    tokens: np.ndarray  # (leaves, max_length + 1) docid tokens, EOS, PAD
    counts: Mapping[str, int]

    @property
    def tenants(self) -> tuple[str, ...]:
        return self.forest.tenants

    def has(self, tenant: str) -> bool:
        return tenant in self.counts

    def root(self, tenant: str) -> int:
        return self.forest.root_of(tenant)

    def entries(self, tenant: str) -> list[tuple[PointId, str]]:
        if not self.has(tenant):
            return []
        t = self.tenants.index(tenant)
        return [(self.point_ids[i], self.docids[i]) for i in np.flatnonzero(self.tenant_of == t)]

    def token_owner(self, vocab_size: int) -> np.ndarray:
        """(vocab_size,) int64 for an atomic index, where each docid's token is its document's own: the root
        of the tenant holding each token, EVERY_TENANT for PAD and EOS, -1 for tokens no document holds."""
        owner = np.full(vocab_size, -1, dtype=np.int64)
        owner[[PAD, EOS]] = EVERY_TENANT
        owner[self.tokens[:, 0].astype(np.int64)] = self.tenant_of
        return owner

    def entries_set(self, tenant: str) -> set[PointId]:
        return {pid for pid, _ in self.entries(tenant)}

    @cached_property
    def _row_of(self) -> dict[PointId, int]:
        return {pid: i for i, pid in enumerate(self.point_ids)}

    def rows_of(self, tenant: str, pids: Sequence[PointId]) -> dict[PointId, int]:
        """Leaf rank of each of ``pids`` that is a docid of ``tenant`` (others are left out)."""
        if not self.has(tenant):
            return {}
        t = self.tenants.index(tenant)
        rows = ((pid, self._row_of.get(pid)) for pid in pids)
        return {pid: r for pid, r in rows if r is not None and int(self.tenant_of[r]) == t}

    def apply(self, codec: DocidCodec, added: Sequence[tuple[str, PointId, str]],
              removed: Mapping[str, Collection[PointId]]) -> Namespaces:
        """A new snapshot: this one's rows minus ``removed`` (tenant -> point ids), plus ``added``
        (tenant, point id, docid) rows. Only the added docids are encoded; the forest is rebuilt."""
        n = len(self.point_ids)
        keep = np.ones(n, dtype=bool)
        for tenant, pids in removed.items():
            if not pids or not self.has(tenant):
                continue
            gone = set(pids)
            t = self.tenants.index(tenant)
            for i in np.flatnonzero(self.tenant_of == t):
                if self.point_ids[i] in gone:
                    keep[i] = False
        kept = np.flatnonzero(keep)
        old_tenants = [self.tenants[t] for t in self.tenant_of[kept]]
        names = [*old_tenants, *(t for t, _, _ in added)]
        pids = [*(self.point_ids[i] for i in kept), *(p for _, p, _ in added)]
        docids = [*(self.docids[i] for i in kept), *(d for _, _, d in added)]
        width = codec.max_length + 1
        new_tokens = codec.encode_many([d for _, _, d in added]) if added else np.zeros((0, width), dtype=np.int64)
        tokens = np.concatenate([self.tokens[kept].astype(np.int64), new_tokens])
        return _assemble(names, pids, docids, tokens)


def _assemble(tenant_names: Sequence[str], pids: Sequence[PointId], docids: Sequence[str],
              tokens: np.ndarray) -> Namespaces:
    tenants = sorted(set(tenant_names))
    index = {t: i for i, t in enumerate(tenants)}
    tenant_arr = np.fromiter((index[t] for t in tenant_names), dtype=np.int64, count=len(tenant_names))
    forest, rows = build_forest(tenants, tenant_arr, tokens)
    counts = dict(zip(tenants, np.bincount(tenant_arr, minlength=len(tenants)).tolist(), strict=True))
    small = tokens.astype(np.int16 if tokens.size == 0 or tokens.max() < 2**15 else np.int32)
    return Namespaces(forest, tuple(pids[i] for i in rows), tuple(docids[i] for i in rows), tenant_arr[rows],
                      small[rows], counts)


def build_namespaces(codec: DocidCodec, entries: Mapping[str, Sequence[tuple[PointId, str]]]) -> Namespaces:
    """entries: tenant -> [(point id, docid)]."""
    names = [t for t in entries for _ in entries[t]]
    pids = [p for t in entries for p, _ in entries[t]]
    docids = [d for t in entries for _, d in entries[t]]
    tokens = codec.encode_many(docids) if docids else np.zeros((0, codec.max_length + 1), dtype=np.int64)
    return _assemble(names, pids, docids, tokens)


def load_namespaces(store: QdrantStore, codec: DocidCodec) -> Namespaces:
    """Every tenant's (point, docid) pairs as Qdrant holds them: the source of truth.

    Tenants whose points carry no docid yet (loaded after the last indexing) have no namespace. Docids the
    codec cannot read most likely mean the collection was indexed again into another index directory since.
    """
    try:
        return build_namespaces(codec, store.docids_by_tenant())
    except ValueError as exc:
        raise ValueError(f"collection '{store.collection}' holds docids this index cannot read ({exc}): most likely "
                         "they were written by another index built on it since; serve that one or rebuild") from exc

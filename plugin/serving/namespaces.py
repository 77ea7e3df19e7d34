"""Tenant namespaces: each tenant's own trie plus what each of its leaves stands for, from Qdrant payloads.

A ``Namespace`` is one tenant's docids: a single-root trie forest (the tenant's root is node 0) and, by
leaf rank, each leaf's point id, docid and tokens. ``Namespaces`` maps tenants to them. Both are
immutable: a change (``apply``) rebuilds only the tenant it names and shares every other tenant's
namespace with the old snapshot, so a write costs time in proportion to that tenant's size, never to the
whole collection. The engine swaps one reference to publish: a search in flight keeps the snapshot it
started with, so it sees the old state or the new state, never a mix.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from genret.decoding.trie import TrieForest, build_forest
from genret.docids import DocidCodec
from genret.store import QdrantStore
from genret.types import PointId


@dataclass(frozen=True)
class Namespace:
    """One tenant's docids: its trie (root 0) and, by leaf rank, point ids, docids and token rows."""

    tenant: str
    forest: TrieForest
    point_ids: tuple[PointId, ...]  # indexed by forest.leaf_rank(leaf)
    docids: tuple[str, ...]
    tokens: np.ndarray  # (leaves, max_length + 1) docid tokens, EOS, PAD

    def __len__(self) -> int:
        return len(self.point_ids)

    @property
    def root(self) -> int:
        return 0

    def entries(self) -> list[tuple[PointId, str]]:
        return list(zip(self.point_ids, self.docids, strict=True))

    @cached_property
    def _row_of(self) -> dict[PointId, int]:
        return {pid: i for i, pid in enumerate(self.point_ids)}

    def rows_of(self, pids: Sequence[PointId]) -> dict[PointId, int]:
        """Leaf rank of each of ``pids`` that is one of this tenant's docids (others are left out)."""
        rows = ((pid, self._row_of.get(pid)) for pid in pids)
        return {pid: r for pid, r in rows if r is not None}

    def first_tokens(self) -> np.ndarray:
        """The first token of every docid: on an atomic index, the tokens that are this tenant's documents."""
        return self.tokens[:, 0].astype(np.int64)

    def apply(self, codec: DocidCodec, added: Sequence[tuple[PointId, str]],
              removed: Collection[PointId]) -> Namespace | None:
        """This namespace minus ``removed`` point ids plus ``added`` (point id, docid) rows; None when empty.
        Only the added docids are encoded."""
        gone = set(removed)
        keep = [i for i, pid in enumerate(self.point_ids) if pid not in gone] if gone else range(len(self))
        pids = [*(self.point_ids[i] for i in keep), *(p for p, _ in added)]
        docids = [*(self.docids[i] for i in keep), *(d for _, d in added)]
        new_tokens = _encode(codec, [d for _, d in added])
        tokens = np.concatenate([self.tokens[list(keep)].astype(np.int64), new_tokens])
        return build_namespace(self.tenant, pids, docids, tokens)


def _encode(codec: DocidCodec, docids: Sequence[str]) -> np.ndarray:
    return codec.encode_many(list(docids)) if docids else np.zeros((0, codec.max_length + 1), dtype=np.int64)


def build_namespace(tenant: str, pids: Sequence[PointId], docids: Sequence[str],
                    tokens: np.ndarray) -> Namespace | None:
    """One tenant's namespace from its rows (None when it has none); docids must be unique in it."""
    if not pids:
        return None
    forest, rows = build_forest((tenant,), np.zeros(len(pids), dtype=np.int64), tokens)
    small = tokens.astype(np.int16 if tokens.size == 0 or tokens.max() < 2**15 else np.int32)
    return Namespace(tenant, forest, tuple(pids[i] for i in rows), tuple(docids[i] for i in rows), small[rows])


@dataclass(frozen=True)
class Namespaces:
    """An immutable snapshot: every tenant with documents -> its namespace."""

    by_tenant: Mapping[str, Namespace]

    @property
    def tenants(self) -> tuple[str, ...]:
        return tuple(sorted(self.by_tenant))

    @property
    def counts(self) -> dict[str, int]:
        return {t: len(ns) for t, ns in self.by_tenant.items()}

    def has(self, tenant: str) -> bool:
        return tenant in self.by_tenant

    def get(self, tenant: str) -> Namespace | None:
        return self.by_tenant.get(tenant)

    def entries(self, tenant: str) -> list[tuple[PointId, str]]:
        ns = self.by_tenant.get(tenant)
        return ns.entries() if ns is not None else []

    def entries_set(self, tenant: str) -> set[PointId]:
        ns = self.by_tenant.get(tenant)
        return set(ns.point_ids) if ns is not None else set()

    def docids(self) -> Iterator[str]:
        """Every docid of every tenant."""
        for ns in self.by_tenant.values():
            yield from ns.docids

    def apply(self, codec: DocidCodec, tenant: str, added: Sequence[tuple[PointId, str]],
              removed: Collection[PointId]) -> Namespaces:
        """A new snapshot in which only ``tenant`` changed: minus ``removed`` point ids, plus ``added``
        (point id, docid) rows. Every other tenant's namespace is shared, not copied."""
        old = self.by_tenant.get(tenant)
        if old is None:
            new = build_namespace(tenant, [p for p, _ in added], [d for _, d in added],
                                  _encode(codec, [d for _, d in added]))
        else:
            new = old.apply(codec, added, removed)
        by_tenant = dict(self.by_tenant)
        if new is None:
            by_tenant.pop(tenant, None)
        else:
            by_tenant[tenant] = new
        return Namespaces(by_tenant)

    def replace(self, codec: DocidCodec, tenant: str, entries: Sequence[tuple[PointId, str]]) -> Namespaces:
        """A new snapshot in which ``tenant`` holds exactly ``entries`` (as re-read from Qdrant)."""
        old = self.by_tenant.get(tenant)
        return self.apply(codec, tenant, entries, old.point_ids if old is not None else ())


def build_namespaces(codec: DocidCodec, entries: Mapping[str, Sequence[tuple[PointId, str]]]) -> Namespaces:
    """entries: tenant -> [(point id, docid)]."""
    by_tenant = {}
    for tenant, rows in entries.items():
        ns = build_namespace(tenant, [p for p, _ in rows], [d for _, d in rows], _encode(codec, [d for _, d in rows]))
        if ns is not None:
            by_tenant[tenant] = ns
    return Namespaces(by_tenant)


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

"""Tenant namespaces: each tenant's own trie plus what each of its leaves stands for, from Qdrant payloads.

A ``Namespace`` is one tenant's docids: single-root tries (``Part``) and, by leaf rank, each leaf's point
id, docid and tokens. ``Namespaces`` maps tenants to them. Both are immutable: a change (``apply``)
touches only the tenant it names and shares every other tenant's namespace with the old snapshot, so a
write never costs time in proportion to the whole collection; in a big tenant it costs time in
proportion to the change (see ``Namespace``). The engine swaps one reference to publish: a search in
flight keeps the snapshot it started with, so it sees the old state or the new state, never a mix.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from genret.decoding.trie import TrieForest, build_forest
from genret.docids import DocidCodec
from genret.store import QdrantStore
from genret.types import PointId

SMALL = 4096  # a tenant with at most this many docids is rebuilt whole on every change
COMPACT_SHARE = 0.01  # ... a bigger one keeps new docids in a delta trie until it holds this share of them


@dataclass(frozen=True)
class Part:
    """An immutable single-root trie over some of a tenant's docids and, by leaf rank, what each leaf is.
    Deleting a docid only marks it dead (``alive``) and counts it out of the trie's ``live`` counts."""

    forest: TrieForest
    point_ids: tuple[PointId, ...]  # indexed by forest.leaf_rank(leaf)
    docids: tuple[str, ...]
    tokens: np.ndarray  # (leaves, max_length + 1) docid tokens, EOS, PAD
    alive: np.ndarray  # (leaves,) bool
    index: Mapping[PointId, int]  # point id -> leaf rank, shared by the part's later versions

    @property
    def live_count(self) -> int:
        return int(self.alive.sum())

    def row(self, pid: PointId) -> int | None:
        r = self.index.get(pid)
        return r if r is not None and self.alive[r] else None

    def live_rows(self) -> np.ndarray:
        return np.flatnonzero(self.alive)

    def without(self, rows: Sequence[int]) -> Part:
        alive = self.alive.copy()
        alive[list(rows)] = False
        forest = self.forest.without(self.tokens[list(rows)].astype(np.int64))
        return Part(forest, self.point_ids, self.docids, self.tokens, alive, self.index)


def _part(tenant: str, pids: Sequence[PointId], docids: Sequence[str], tokens: np.ndarray) -> Part:
    forest, rows = build_forest((tenant,), np.zeros(len(pids), dtype=np.int64), tokens)
    small = tokens.astype(np.int16 if tokens.size == 0 or tokens.max() < 2**15 else np.int32)
    point_ids = tuple(pids[i] for i in rows)
    return Part(forest, point_ids, tuple(docids[i] for i in rows), small[rows], np.ones(len(rows), dtype=bool),
                {pid: i for i, pid in enumerate(point_ids)})


@dataclass(frozen=True)
class Namespace:
    """One tenant's docids: a ``base`` trie and, for a big tenant, a small ``delta`` trie of the docids
    added since the base was built. A change rebuilds a small tenant whole; a big one's new docids go into
    the delta (rebuilt, in proportion to its size) and its deleted ones are counted out of the base
    where they are (in proportion to their depth, plus one copy of the base's live counts). The parts are
    compacted into one base when the delta reaches ``COMPACT_SHARE`` of the tenant or a quarter of the
    base is dead. Decoding starts every query at each part's root (``parts``)."""

    tenant: str
    base: Part
    delta: Part | None = None

    @property
    def parts(self) -> tuple[Part, ...]:
        return (self.base,) if self.delta is None else (self.base, self.delta)

    def __len__(self) -> int:
        return sum(p.live_count for p in self.parts)

    @property
    def num_nodes(self) -> int:
        return sum(p.forest.num_nodes for p in self.parts)

    def entries(self) -> list[tuple[PointId, str]]:
        return [(p.point_ids[i], p.docids[i]) for p in self.parts for i in p.live_rows()]

    @property
    def point_ids(self) -> list[PointId]:
        return [pid for pid, _ in self.entries()]

    @property
    def docids(self) -> list[str]:
        return [d for _, d in self.entries()]

    def locate(self, pids: Sequence[PointId]) -> dict[PointId, tuple[int, int]]:
        """(part, leaf rank) of each of ``pids`` that is one of this tenant's live docids (others left out)."""
        out = {}
        for pid in pids:
            for k, part in enumerate(self.parts):
                r = part.row(pid)
                if r is not None:
                    out[pid] = (k, r)
                    break
        return out

    def first_tokens(self) -> np.ndarray:
        """The first token of every live docid: on an atomic index, the tokens that are this tenant's documents."""
        return np.concatenate([p.tokens[p.alive, 0] for p in self.parts]).astype(np.int64)

    def apply(self, codec: DocidCodec, added: Sequence[tuple[PointId, str]],
              removed: Collection[PointId]) -> Namespace | None:
        """This namespace minus ``removed`` point ids plus ``added`` (point id, docid) rows; None when empty.
        Only the added docids are encoded."""
        gone = set(removed)
        live = len(self) - len(self.locate(list(gone))) + len(added)
        if live == 0:
            return None
        if live <= SMALL:
            return self.rebuilt(codec, added, gone)
        base, delta = self.base, self.delta
        dead_base = [r for pid in gone if (r := base.row(pid)) is not None]
        if dead_base:
            base = base.without(dead_base)
        kept = ([(delta.point_ids[i], delta.docids[i], delta.tokens[i]) for i in delta.live_rows()
                 if delta.point_ids[i] not in gone] if delta is not None else [])
        if len(kept) + len(added) > max(SMALL, COMPACT_SHARE * live) or base.live_count < 0.75 * len(base.alive):
            return self.rebuilt(codec, added, gone)
        new_tokens = _encode(codec, [d for _, d in added])
        rows = [*kept, *((p, d, t) for (p, d), t in zip(added, new_tokens, strict=True))]
        if not rows:
            return Namespace(self.tenant, base, None)
        tokens = np.stack([np.asarray(t, dtype=np.int64) for _, _, t in rows])
        return Namespace(self.tenant, base, _part(self.tenant, [p for p, _, _ in rows], [d for _, d, _ in rows], tokens))

    def rebuilt(self, codec: DocidCodec, added: Sequence[tuple[PointId, str]] = (),
                gone: Collection[PointId] = ()) -> Namespace | None:
        """Every live docid but ``gone``, plus ``added``, in one base trie."""
        pids, docids, tokens = [], [], []
        for part in self.parts:
            keep = [i for i in part.live_rows() if part.point_ids[i] not in gone]
            pids += [part.point_ids[i] for i in keep]
            docids += [part.docids[i] for i in keep]
            tokens.append(part.tokens[keep].astype(np.int64))
        tokens.append(_encode(codec, [d for _, d in added]))
        return build_namespace(self.tenant, [*pids, *(p for p, _ in added)], [*docids, *(d for _, d in added)],
                               np.concatenate(tokens))


def _encode(codec: DocidCodec, docids: Sequence[str]) -> np.ndarray:
    return codec.encode_many(list(docids)) if docids else np.zeros((0, codec.max_length + 1), dtype=np.int64)


def build_namespace(tenant: str, pids: Sequence[PointId], docids: Sequence[str],
                    tokens: np.ndarray) -> Namespace | None:
    """One tenant's namespace from its rows (None when it has none); docids must be unique in it."""
    if not pids:
        return None
    return Namespace(tenant, _part(tenant, pids, docids, tokens))


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
        return {pid for pid, _ in self.entries(tenant)}

    def docids(self) -> Iterator[str]:
        """Every docid of every tenant."""
        for ns in self.by_tenant.values():
            yield from ns.docids

    def changed(self, codec: DocidCodec, tenant: str, added: Sequence[tuple[PointId, str]],
                removed: Collection[PointId]) -> Namespace | None:
        """``tenant``'s namespace minus ``removed`` point ids plus ``added`` (point id, docid) rows; None
        when it is left empty. Costs time in proportion to that tenant (or the change), never to others."""
        old = self.by_tenant.get(tenant)
        if old is None:
            return build_namespace(tenant, [p for p, _ in added], [d for _, d in added],
                                   _encode(codec, [d for _, d in added]))
        return old.apply(codec, added, removed)

    def with_tenant(self, tenant: str, ns: Namespace | None) -> Namespaces:
        """A new snapshot in which ``tenant``'s namespace is ``ns`` (None: gone); every other tenant's
        namespace is shared, not copied."""
        by_tenant = dict(self.by_tenant)
        if ns is None:
            by_tenant.pop(tenant, None)
        else:
            by_tenant[tenant] = ns
        return Namespaces(by_tenant)

    def apply(self, codec: DocidCodec, tenant: str, added: Sequence[tuple[PointId, str]],
              removed: Collection[PointId]) -> Namespaces:
        """A new snapshot in which only ``tenant`` changed (see ``changed``)."""
        return self.with_tenant(tenant, self.changed(codec, tenant, added, removed))

    def replace(self, codec: DocidCodec, tenant: str, entries: Sequence[tuple[PointId, str]]) -> Namespaces:
        """A new snapshot in which ``tenant`` holds exactly ``entries`` (as re-read from Qdrant), in one trie."""
        return self.with_tenant(tenant, build_namespace(tenant, [p for p, _ in entries], [d for _, d in entries],
                                                        _encode(codec, [d for _, d in entries])))


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

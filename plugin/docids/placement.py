"""Docids for documents that arrive after indexing, so they are searchable before any retraining.

Semantic docids: a new document goes where its embedding is closest. From the root, each step compares
the document with the centroids of the existing child prefixes (the mean embedding of the documents
below each) and descends into the nearest; it takes the first free code at the level where the nearest
child is a document (a leaf cluster), so it lands among its nearest neighbours. If that cluster is full
it goes one level deeper under its nearest neighbour, and failing that tries the next-nearest subtrees.
Keyword docids are the document's rarest title words the index vocabulary knows (``genret.docids.keywords``);
naive docids are the document id itself, when the codec can spell it. These live in the tenant's own
namespace, so a tenant only ever competes with itself for them. Atomic docids are one row of the model
each and come from the index-wide pool (``genret.serving.allocation``).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import numpy as np

from genret.docids import DocidCodec, KeywordCodec, NaiveCodec, SemanticCodec
from genret.errors import FailedPrecondition

Prefix = tuple[int, ...]


class TenantDocids:
    """One tenant's docids with the embedding sums that give each prefix its centroid, and which of them
    are new (given by live writes, not yet trained into the model): what the tenant's quota counts."""

    def __init__(self, codec: DocidCodec) -> None:
        self.codec = codec
        self.docids: set[str] = set()
        self.new: set[str] = set()
        self._children: dict[Prefix, set[int]] = defaultdict(set)
        self._below: dict[Prefix, int] = defaultdict(int)  # documents at or below a prefix
        self._sums: dict[Prefix, np.ndarray] = {}
        self._counts: dict[Prefix, int] = defaultdict(int)

    def _codes(self, docid: str) -> Prefix:
        return tuple(int(c) for c in docid.split("-"))

    def add(self, docid: str, vector: np.ndarray | None, new: bool = False) -> None:
        if docid in self.docids:
            raise ValueError(f"docid {docid} is already taken")
        self.docids.add(docid)
        if new:
            self.new.add(docid)
        if not isinstance(self.codec, SemanticCodec):
            return
        codes = self._codes(docid)
        for d in range(len(codes)):
            self._children[codes[:d]].add(codes[d])
            self._below[codes[: d + 1]] += 1
            if vector is not None:
                p = codes[: d + 1]
                self._sums[p] = self._sums[p] + vector if p in self._sums else vector.astype(np.float64)
                self._counts[p] += 1

    def remove(self, docid: str, vector: np.ndarray | None) -> None:
        if docid not in self.docids:
            return
        self.docids.discard(docid)
        self.new.discard(docid)
        if not isinstance(self.codec, SemanticCodec):
            return
        codes = self._codes(docid)
        for d in range(len(codes) - 1, -1, -1):
            p = codes[: d + 1]
            self._below[p] -= 1
            if vector is not None and p in self._sums:
                self._sums[p] = self._sums[p] - vector
                self._counts[p] -= 1
            if self._below[p] <= 0:
                self._children[codes[:d]].discard(codes[d])
                for table in (self._below, self._sums, self._counts):
                    table.pop(p, None)

    def allocate(self, vector: np.ndarray | None) -> str:
        """A semantic docid no document of this tenant has, placed by ``vector`` (None: the first free place)."""
        if not isinstance(self.codec, SemanticCodec):
            raise ValueError(f"{type(self.codec).__name__} docids are not placed by embedding")
        found = self._place((), vector, self.codec)
        if found is None:
            raise FailedPrecondition("the tenant's docid space is full; re-index with a larger depth")
        return "-".join(map(str, found))

    def _order(self, prefix: Prefix, kids: Iterable[int], vector: np.ndarray | None) -> list[int]:
        kids = sorted(kids)
        if vector is None:
            return kids

        def distance(c: int) -> float:
            p = (*prefix, c)
            n = self._counts.get(p, 0)
            if n <= 0:
                return float("inf")
            return float(-np.dot(self._sums[p] / n, vector))  # embeddings are unit length: cosine

        return sorted(kids, key=distance)

    def _place(self, prefix: Prefix, vector: np.ndarray | None, codec: SemanticCodec) -> Prefix | None:
        used = self._children.get(prefix, set())
        free = next((c for c in range(codec.branching) if c not in used), None)
        kids = self._order(prefix, used, vector)
        nearest_is_doc = bool(kids) and not self._children.get((*prefix, kids[0]))
        if free is not None and (not kids or nearest_is_doc):
            return (*prefix, free)
        for c in kids:
            child = (*prefix, c)
            if len(child) < codec.depth:
                found = self._place(child, vector, codec)
                if found is not None:
                    return found
        return (*prefix, free) if free is not None else None


def docid_for(codec: DocidCodec, state: TenantDocids, doc_id: str, vector: np.ndarray | None,
              title: str = "", text: str = "") -> str:
    """The docid a new document of this tenant gets (every scheme but atomic, see ``AtomicPool``)."""
    if isinstance(codec, KeywordCodec):
        from genret.docids.keywords import place

        docid = place(codec.words, title, text, state.docids)
        try:
            if docid is None:
                raise ValueError("none of its words is in the index vocabulary")
            codec.encode(docid)
        except ValueError as exc:
            raise FailedPrecondition(f"document '{doc_id}' has no keyword docid in this index: {exc}; "
                                     "re-index to add it") from exc
        return docid
    if isinstance(codec, NaiveCodec):
        try:
            codec.encode(doc_id)
        except ValueError as exc:
            raise FailedPrecondition(f"document id '{doc_id}' cannot be a naive docid of this index: {exc}") from exc
        if doc_id in state.docids:
            raise FailedPrecondition(f"docid '{doc_id}' is taken")
        return doc_id
    return state.allocate(vector)

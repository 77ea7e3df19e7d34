"""A Qdrant ``QueryPoints`` with genret leaves, answered with Qdrant's own semantics.

A leaf is genret's when its query is ``nearest`` a ``Document`` whose ``model`` is one of ``GENRET_MODELS``.
The request is evaluated as Qdrant evaluates it:

* each level's filter is merged into its prefetches' filters (must, should and must_not concatenated,
  the larger ``min_should`` kept), so limits apply to already filtered candidates;
* a genret leaf is a generative search of the tenant named by its merged filter, with ``limit`` (default 10)
  results; its hits are then checked in Qdrant against that merged filter, so no point outside the filter,
  and no deleted point, is ever returned (filtering inside decoding is not done here);
* a level with no genret leaf below it goes to Qdrant as it is;
* a level that fuses (``Fusion.RRF``, ``Fusion.DBSF``, ``Rrf{k, weights}``) fuses its prefetches' results with
  Qdrant's formulas (below) to ``limit + offset`` points, keeps ``score >= score_threshold`` and drops
  ``offset``; a level with a vector query re-ranks its prefetches' points in Qdrant (a ``has_id`` filter);
* payloads and vectors are read last, for the returned points only, with the request's selectors.

Qdrant's RRF scores a point ``sum over sources of 1 / (position / weight + k)``, position 0-based, ``k``
2 by default (genret.v1's own RRF uses ``k`` = 60 over 1-based ranks). DBSF scales each source's scores by
its mean +- 3 standard deviations (sample variance) and sums them; a single point, or equal scores, is 0.5.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import qdrant_client.grpc as qg

from genret.errors import InvalidArgument, Unimplemented
from genret.ranking.fusion import dbsf_scale

GENRET_MODELS = frozenset({"genret", "genret/generative"})
DEFAULT_RRF_K = 2
DEFAULT_LIMIT = 10

Key = int | str  # a point id as a dict key: its number or its UUID
Scored = tuple[qg.PointId, float]


def key_of(pid: qg.PointId) -> Key:
    return pid.num if pid.WhichOneof("point_id_options") == "num" else pid.uuid


def genret_text(query: qg.Query | None) -> qg.Document | None:
    """The Document of a genret leaf's query, or None for any other query."""
    if query is None or query.WhichOneof("variant") != "nearest":
        return None
    vec = query.nearest
    if vec.WhichOneof("variant") == "document" and vec.document.model in GENRET_MODELS:
        return vec.document
    return None


def has_genret(node: qg.QueryPoints | qg.PrefetchQuery | qg.QueryPointGroups) -> bool:
    query = node.query if node.HasField("query") else None
    return genret_text(query) is not None or any(has_genret(p) for p in node.prefetch)


def merge_filters(outer: qg.Filter | None, inner: qg.Filter | None) -> qg.Filter | None:
    """Qdrant's merge of a level's filter into a prefetch's (``Filter::merge_opts``)."""
    if outer is None:
        return inner
    if inner is None:
        return outer
    out = qg.Filter()
    for clause in ("must", "should", "must_not"):
        getattr(out, clause).extend([*getattr(outer, clause), *getattr(inner, clause)])
    a = outer.min_should if outer.HasField("min_should") else None
    b = inner.min_should if inner.HasField("min_should") else None
    if a is not None and b is not None:
        out.min_should.conditions.extend([*a.conditions, *b.conditions])
        out.min_should.min_count = max(a.min_count, b.min_count)
    elif a is not None or b is not None:
        out.min_should.CopyFrom(a if a is not None else b)
    return out


def with_ids(flt: qg.Filter | None, ids: Sequence[qg.PointId]) -> qg.Filter:
    out = qg.Filter()
    if flt is not None:
        out.CopyFrom(flt)
    out.must.append(qg.Condition(has_id=qg.HasIdCondition(has_id=list(ids))))
    return out


def rrf(sources: Sequence[Sequence[Scored]], limit: int, k: int = DEFAULT_RRF_K,
        weights: Sequence[float] | None = None) -> list[Scored]:
    """Qdrant's reciprocal rank fusion (ties keep first-seen order)."""
    if weights is not None and len(weights) != len(sources):
        raise InvalidArgument(f"rrf has {len(weights)} weights for {len(sources)} prefetches")
    scores: dict[Key, float] = {}
    ids: dict[Key, qg.PointId] = {}
    for s, source in enumerate(sources):
        w = 1.0 if weights is None else float(weights[s])
        for pos, (pid, _) in enumerate(source):
            key = key_of(pid)
            ids.setdefault(key, pid)
            scores[key] = scores.get(key, 0.0) + (0.0 if w <= 0 else 1.0 / ((pos + 1.0) / w + k - 1.0))
    ranked = sorted(scores.items(), key=lambda kv: kv[1], reverse=True)[:limit]
    return [(ids[key], score) for key, score in ranked]


def dbsf(sources: Sequence[Sequence[Scored]], limit: int) -> list[Scored]:
    """Qdrant's distribution-based score fusion."""
    scores: dict[Key, float] = {}
    ids: dict[Key, qg.PointId] = {}
    for source in sources:
        for (pid, _), value in zip(source, dbsf_scale([s for _, s in source]), strict=True):
            key = key_of(pid)
            ids.setdefault(key, pid)
            scores[key] = scores.get(key, 0.0) + value
    ranked = sorted(scores.items(), key=lambda kv: kv[1], reverse=True)[:limit]
    return [(ids[key], score) for key, score in ranked]


Leaf = Callable[[qg.Document, int, "qg.Filter | None"], Awaitable[list[Scored]]]  # (document, limit, filter)
Forward = Callable[[qg.QueryPoints], Awaitable[list[qg.ScoredPoint]]]
Fetch = Callable[[Sequence[qg.PointId], qg.QueryPoints], Awaitable[dict[Key, qg.RetrievedPoint]]]


@dataclass(frozen=True)
class Level:
    """One level of a query tree: the request itself or one of its prefetches, with its merged filter."""

    query: qg.Query | None
    prefetch: Sequence[qg.PrefetchQuery]
    using: str | None
    filter: qg.Filter | None
    params: qg.SearchParams | None
    threshold: float | None
    limit: int

    @staticmethod
    def of(node: qg.QueryPoints | qg.PrefetchQuery, outer: qg.Filter | None, limit: int) -> Level:
        own = node.filter if node.HasField("filter") else None
        return Level(node.query if node.HasField("query") else None, list(node.prefetch),
                     node.using if node.HasField("using") else None, merge_filters(outer, own),
                     node.params if node.HasField("params") else None,
                     node.score_threshold if node.HasField("score_threshold") else None, limit)


class QueryPlan:
    """Evaluates one ``QueryPoints`` of ``collection``: genret leaves through ``leaf``, every other level
    through ``forward`` (Qdrant), payloads and vectors through ``fetch``."""

    def __init__(self, collection: str, leaf: Leaf, forward: Forward, fetch: Fetch) -> None:
        self.collection = collection
        self._leaf, self._forward, self._fetch = leaf, forward, fetch

    async def run(self, req: qg.QueryPoints) -> list[qg.ScoredPoint]:
        limit = req.limit if req.HasField("limit") else DEFAULT_LIMIT
        offset = req.offset if req.HasField("offset") else 0
        if req.HasField("lookup_from"):
            raise Unimplemented("lookup_from is not supported in a query with a genret leaf")
        scored = (await self._level(Level.of(req, None, limit + offset)))[offset:]
        found = await self._fetch([pid for pid, _ in scored], req)
        out = []
        for pid, score in scored:
            rec = found.get(key_of(pid))
            if rec is None:  # deleted since it was scored
                continue
            point = qg.ScoredPoint(id=pid, score=score)
            for name, value in rec.payload.items():
                point.payload[name].CopyFrom(value)
            if rec.HasField("vectors"):
                point.vectors.CopyFrom(rec.vectors)
            out.append(point)
        return out

    async def _level(self, level: Level) -> list[Scored]:
        doc = genret_text(level.query)
        if doc is not None:
            if level.prefetch:
                raise Unimplemented("a genret Document cannot re-rank prefetch results; put it in a prefetch "
                                    "and fuse it with the others (Fusion.RRF or Fusion.DBSF)")
            hits = await self._leaf(doc, level.limit, level.filter)
            return [(pid, s) for pid, s in hits if level.threshold is None or s >= level.threshold]
        if not any(has_genret(p) for p in level.prefetch):
            return [(p.id, p.score) for p in await self._forward(self._plain(level, level.prefetch, level.filter))]
        sources = await asyncio.gather(*(self._level(Level.of(p, level.filter, p.limit if p.HasField("limit")
                                                                else DEFAULT_LIMIT)) for p in level.prefetch))
        kind = level.query.WhichOneof("variant") if level.query is not None else None
        if kind in ("fusion", "rrf"):
            assert level.query is not None
            if kind == "rrf":
                spec = level.query.rrf
                fused = rrf(sources, level.limit, spec.k if spec.HasField("k") else DEFAULT_RRF_K,
                            list(spec.weights) or None)
            elif level.query.fusion == qg.Fusion.RRF:
                fused = rrf(sources, level.limit)
            elif level.query.fusion == qg.Fusion.DBSF:
                fused = dbsf(sources, level.limit)
            else:
                raise InvalidArgument(f"unknown fusion {level.query.fusion}")
            return [(pid, s) for pid, s in fused if level.threshold is None or s >= level.threshold]
        if kind in ("nearest", "recommend", "discover", "context", "nearest_with_mmr", "relevance_feedback"):
            union: dict[Key, qg.PointId] = {}
            for source in sources:
                for pid, _ in source:
                    union.setdefault(key_of(pid), pid)
            if not union:
                return []
            plain = self._plain(level, (), with_ids(level.filter, list(union.values())))
            return [(p.id, p.score) for p in await self._forward(plain)]
        raise Unimplemented(f"a '{kind or 'missing'}' query over prefetches with a genret leaf is not supported; "
                            "use Fusion.RRF, Fusion.DBSF, Rrf or a vector query")

    def _plain(self, level: Level, prefetch: Sequence[qg.PrefetchQuery], flt: qg.Filter | None) -> qg.QueryPoints:
        """The level as a QueryPoints Qdrant answers itself (ids and scores only)."""
        out = qg.QueryPoints(collection_name=self.collection, prefetch=list(prefetch), limit=level.limit,
                             with_payload=qg.WithPayloadSelector(enable=False))
        if level.query is not None:
            out.query.CopyFrom(level.query)
        if level.using is not None:
            out.using = level.using
        if flt is not None:
            out.filter.CopyFrom(flt)
        if level.params is not None:
            out.params.CopyFrom(level.params)
        if level.threshold is not None:
            out.score_threshold = level.threshold
        return out


__all__ = ["GENRET_MODELS", "QueryPlan", "dbsf", "genret_text", "has_genret", "key_of", "merge_filters", "rrf"]

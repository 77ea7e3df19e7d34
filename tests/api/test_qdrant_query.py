"""Qdrant's semantics in the front door: fusion formulas, filter merging, genret leaf detection.

The formulas are checked against qdrant-client's own implementations of Qdrant's fusion (what its local
mode runs), the filter merge against the local mode's merge of a level's filter into a prefetch's.
"""

from __future__ import annotations

import pytest
import qdrant_client.grpc as qg
from hypothesis import example, given, settings
from hypothesis import strategies as st
from qdrant_client import models
from qdrant_client.conversions.conversion import GrpcToRest, RestToGrpc
from qdrant_client.hybrid.fusion import distribution_based_score_fusion, reciprocal_rank_fusion
from qdrant_client.local.local_collection import _merge_filters

from genret.api.auth import key_from_metadata
from genret.api.qdrant_query import dbsf, genret_text, has_genret, merge_filters, rrf

sources = st.lists(st.lists(st.tuples(st.integers(0, 30), st.floats(-5, 5, allow_nan=False)), max_size=12),
                   min_size=1, max_size=4)


def _dedup(source: list[tuple[int, float]]) -> list[tuple[int, float]]:
    seen: set[int] = set()
    return [(i, s) for i, s in source if not (i in seen or seen.add(i))]


def _ours(src: list[list[tuple[int, float]]]) -> list[list[tuple[qg.PointId, float]]]:
    return [[(qg.PointId(num=i), s) for i, s in x] for x in src]


def _theirs(src: list[list[tuple[int, float]]]) -> list[list[models.ScoredPoint]]:
    return [[models.ScoredPoint(id=i, version=0, score=s) for i, s in x] for x in src]


def _same(ours: list[tuple[qg.PointId, float]], theirs: list[models.ScoredPoint]) -> None:
    assert [s for _, s in ours] == pytest.approx([p.score for p in theirs], rel=1e-9, abs=1e-12)
    assert {p.num: s for p, s in ours} == pytest.approx({p.id: p.score for p in theirs}, rel=1e-9, abs=1e-12)


@settings(max_examples=200, deadline=None)
@given(sources, st.integers(1, 12), st.integers(1, 80))
def test_rrf_is_qdrants(src: list[list[tuple[int, float]]], limit: int, k: int) -> None:
    src = [_dedup(x) for x in src]
    _same(rrf(_ours(src), limit), reciprocal_rank_fusion(_theirs(src), limit=limit))
    weights = [1.0 + i for i in range(len(src))]
    _same(rrf(_ours(src), limit, k, weights),
          reciprocal_rank_fusion(_theirs(src), limit=limit, ranking_constant_k=k, weights=weights))


@settings(max_examples=200, deadline=None)
@given(sources, st.integers(1, 12))
@example([[(1, -0.1875), (0, 0.0)], [(0, 0.0), (1, 2.8923408153376995)]], 1)  # sums equal only in Qdrant's arithmetic
def test_dbsf_is_qdrants(src: list[list[tuple[int, float]]], limit: int) -> None:
    src = [_dedup(x) for x in src]
    _same(dbsf(_ours(src), limit), distribution_based_score_fusion(_theirs(src), limit=limit))


def test_rrf_uses_k_2_over_0_based_positions() -> None:
    fused = rrf([[(qg.PointId(num=1), 9.0), (qg.PointId(num=2), 8.0)]], 2)
    assert [s for _, s in fused] == [1 / 2, 1 / 3]


def _field(key: str, value: str) -> models.FieldCondition:
    return models.FieldCondition(key=key, match=models.MatchValue(value=value))


def test_filters_merge_as_qdrant_merges_them() -> None:
    outer = models.Filter(must=[_field("org", "acme")], should=[_field("lang", "en")],
                          min_should=models.MinShould(conditions=[_field("a", "1")], min_count=1))
    inner = models.Filter(must=[_field("kind", "news")], must_not=[_field("org", "globex")],
                          should=[_field("lang", "de")],
                          min_should=models.MinShould(conditions=[_field("b", "2"), _field("c", "3")], min_count=2))
    for a, b in ((outer, inner), (outer, None), (None, inner), (inner, outer)):
        got = merge_filters(RestToGrpc.convert_filter(a) if a else None, RestToGrpc.convert_filter(b) if b else None)
        want = _merge_filters(a, b)
        assert want is not None and got is not None
        assert GrpcToRest.convert_filter(got) == GrpcToRest.convert_filter(RestToGrpc.convert_filter(want))


def _document(model: str) -> qg.Query:
    return qg.Query(nearest=qg.VectorInput(document=qg.Document(text="wing flutter", model=model)))


def test_only_documents_naming_genret_are_genret_leaves() -> None:
    assert genret_text(_document("genret")) is not None
    assert genret_text(_document("genret/generative")) is not None
    assert genret_text(_document("sentence-transformers/all-minilm-l6-v2")) is None
    assert genret_text(qg.Query(nearest=qg.VectorInput(dense=qg.DenseVector(data=[0.1])))) is None
    deep = qg.QueryPoints(prefetch=[qg.PrefetchQuery(prefetch=[qg.PrefetchQuery(query=_document("genret"))])])
    assert has_genret(deep)
    assert not has_genret(qg.QueryPoints(prefetch=[qg.PrefetchQuery(query=_document("bm25"))]))


def test_qdrants_api_key_header_carries_a_genret_key() -> None:
    assert key_from_metadata([("api-key", "gr_x")]) == "gr_x"

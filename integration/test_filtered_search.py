"""Filters inside generative decoding, over real gRPC: every hit matches, nothing is lost to the filter.

Documents carry payload fields (an integer ``n``, a keyword ``color``, a list of ``tags``); random filters
in Qdrant's model are sent with ``SearchRequest.filter``. Every generative hit must match the filter and
the tenant, and with as many beams as matching documents the filtered search must return exactly the
matching documents, scored as teacher-forced scoring scores them without any filter.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.struct_pb2 import Struct
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from qdrant_client import models

from genret.api.server import ServerThread
from genret.config import Config
from genret.data.beir import load_corpus
from genret.ranking.calibration import GENERATIVE
from genret.serving.engine import Engine
from genret.store import QdrantStore, parse_filter
from genret.types import SearchQuery
from genret.v1 import genret_pb2 as pb
from genret.v1 import genret_pb2_grpc as pb_grpc

from .conftest import TENANT, Stack, small_corpus, trained_engine

N = 24
COLORS = ("red", "green", "blue")


@dataclasses.dataclass
class Filtered:
    engine: Engine
    store: QdrantStore
    stub: pb_grpc.GenRetStub
    titles: list[str]
    payloads: dict[str, dict[str, Any]]  # doc id -> payload fields


@pytest.fixture(scope="module")
def filtered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Filtered]:
    tmp = tmp_path_factory.mktemp("filtered")
    docs = load_corpus(small_corpus(tmp, N))
    rng = random.Random(3)
    payloads = {d.doc_id: {"n": i, "color": COLORS[rng.randrange(3)], "tags": rng.sample(["a", "b", "c", "d"], 2)}
                for i, d in enumerate(docs)}
    cfg = Config(qdrant_path=str(tmp / "qdrant"), collection="filtered", index_dir=str(tmp / "index"), port=0,
                 device="cpu")
    store = QdrantStore(cfg)
    store.ensure_collection(None)
    for tenant, some in (("acme", docs), ("globex", docs[:8])):
        store.upsert_documents(tenant, [(d.doc_id, d.title, d.text) for d in some], None,
                               extras=[(payloads[d.doc_id], {}) for d in some])
    # exactness under filters does not depend on how well the model is trained: a short training will do
    engine = trained_engine(store, cfg, {d.doc_id: d.title for d in docs}, "semantic", epochs=3)
    with ServerThread(cfg, engine) as server, grpc.insecure_channel(server.target) as channel:
        yield Filtered(engine, store, pb_grpc.GenRetStub(channel), [d.title for d in docs], payloads)
    store.close()


def conditions() -> st.SearchStrategy[dict[str, Any]]:
    return st.one_of(
        st.builds(lambda lo, span: {"key": "n", "range": {"gte": lo, "lt": lo + span}},
                  st.integers(0, N), st.integers(1, N)),
        st.builds(lambda c: {"key": "color", "match": {"value": c}}, st.sampled_from(COLORS)),
        st.builds(lambda cs: {"key": "color", "match": {"any": cs}},
                  st.lists(st.sampled_from(COLORS), min_size=1, max_size=2, unique=True)),
        st.builds(lambda t: {"key": "tags", "match": {"value": t}}, st.sampled_from("abcd")))


filters = st.builds(
    lambda must, must_not, should: {k: v for k, v in (("must", must), ("must_not", must_not), ("should", should)) if v},
    st.lists(conditions(), max_size=2), st.lists(conditions(), max_size=1), st.lists(conditions(), max_size=2))


def _struct(flt: dict[str, Any]) -> Struct:
    out = Struct()
    out.update(flt)
    return out


def _matching(f: Filtered, tenant: str, flt: dict[str, Any]) -> set[str]:
    """The tenant's points Qdrant says match (point ids)."""
    cond = models.Filter(must=[models.FieldCondition(key="tenant", match=models.MatchValue(value=tenant)),
                               parse_filter(flt)])
    records, _ = f.store.client.scroll("filtered", scroll_filter=cond, limit=1000, with_payload=False)
    return {str(r.id) for r in records}


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flt=filters, tenant=st.sampled_from(["acme", "globex"]), pick=st.integers(0, N - 1))
def test_filtered_decoding_returns_exactly_the_matching_documents_scored_as_unfiltered(
        filtered: Filtered, flt: dict[str, Any], tenant: str, pick: int) -> None:
    text = filtered.titles[pick]
    match = _matching(filtered, tenant, flt)
    res = filtered.stub.Search(pb.SearchRequest(tenant=tenant, query=text, top_k=10, beam_size=10,
                                                filter=_struct(flt)))
    assert {h.point_id for h in res.hits} <= match
    if not match:
        assert not res.hits
        return
    wide = filtered.stub.Search(pb.SearchRequest(tenant=tenant, query=text, top_k=len(match),
                                                 beam_size=max(len(match), 1), filter=_struct(flt)))
    unfiltered = filtered.engine.scorers(SearchQuery(tenant, text), None)[GENERATIVE](sorted(match))
    assert {h.point_id for h in wide.hits} == match
    assert all(abs(h.score - unfiltered[h.point_id]) < 1e-3 for h in wide.hits)  # float32, batched either way


@pytest.mark.parametrize(("flt", "code"), [
    ({"must": [{"key": "n", "rnge": {"gte": 1}}]}, grpc.StatusCode.INVALID_ARGUMENT),  # unknown operator
    ({"must": [{"key": "n", "range": {"gte": "ten"}}]}, grpc.StatusCode.INVALID_ARGUMENT),  # wrong value type
    ({"must": [{"key": "tenant", "match": {"value": "globex"}}]}, grpc.StatusCode.PERMISSION_DENIED),
    ({"should": [{"key": "tenant", "match": {"any": ["acme", "globex"]}}]}, grpc.StatusCode.PERMISSION_DENIED),
    ({"must": [{"has_id": [f"00000000-0000-0000-0000-{i:012d}" for i in range(10_001)]}]},
     grpc.StatusCode.INVALID_ARGUMENT),  # oversized has_id
])
def test_bad_filters_are_refused_with_the_reason(filtered: Filtered, flt: dict[str, Any],
                                                 code: grpc.StatusCode) -> None:
    with pytest.raises(grpc.RpcError) as err:
        filtered.stub.Search(pb.SearchRequest(tenant="acme", query="flow", filter=_struct(flt)))
    assert err.value.code() == code, err.value.details()
    assert err.value.details()


def test_a_filter_matching_nothing_gives_no_hits(filtered: Filtered) -> None:
    res = filtered.stub.Search(pb.SearchRequest(tenant="acme", query="flow", filter=_struct(
        {"must": [{"key": "n", "range": {"gt": 10_000}}]})))
    assert list(res.hits) == []


def test_scores_and_filters_outlive_writes(filtered: Filtered, tmp_path: Path) -> None:
    flt = {"must": [{"key": "color", "match": {"value": "red"}}]}
    before = _matching(filtered, "acme", flt)
    doc = pb.Document(id="late", title=filtered.titles[0], text="a red newcomer", payload=_struct({"color": "red"}))
    added = filtered.stub.UpsertDocuments(pb.UpsertRequest(tenant="acme", documents=[doc])).documents[0]
    try:
        assert _matching(filtered, "acme", flt) == before | {added.point_id}
        res = filtered.stub.Search(pb.SearchRequest(tenant="acme", query=filtered.titles[0], top_k=len(before) + 1,
                                                    beam_size=len(before) + 1, filter=_struct(flt)))
        assert {h.point_id for h in res.hits} == before | {added.point_id}  # a new snapshot, a new filtered trie
    finally:
        filtered.stub.DeleteDocuments(pb.DeleteRequest(tenant="acme", ids=["late"]))
    res = filtered.stub.Search(pb.SearchRequest(tenant="acme", query=filtered.titles[0], top_k=len(before),
                                                beam_size=len(before), filter=_struct(flt)))
    assert {h.point_id for h in res.hits} == before


def test_a_tenants_cached_filtered_trie_is_renewed_by_its_own_writes_only(filtered: Filtered,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Another tenant's writes leave a tenant's cached filtered trie in place (its next filtered search asks
    Qdrant for nothing); the tenant's own write makes its next one read the filter's points again."""
    flt = {"must": [{"key": "color", "match": {"value": "red"}}]}
    reads: list[str] = []
    matching = filtered.store.matching
    monkeypatch.setattr(filtered.store, "matching", lambda tenant, cond: reads.append(tenant) or matching(tenant, cond))
    search = lambda: filtered.stub.Search(pb.SearchRequest(tenant="acme", query=filtered.titles[0],  # noqa: E731
                                                           filter=_struct(flt)))
    doc = lambda i: pb.Document(id=f"late-{i}", title="late", text="a red newcomer",  # noqa: E731
                                payload=_struct({"color": "red"}))
    search()
    first = len(reads)
    filtered.stub.UpsertDocuments(pb.UpsertRequest(tenant="globex", documents=[doc(0)]))
    try:
        search()
        assert len(reads) == first  # globex's write: acme's filtered trie is still the cached one
        filtered.stub.UpsertDocuments(pb.UpsertRequest(tenant="acme", documents=[doc(1)]))
        try:
            search()
            assert reads[first:] == ["acme"]  # its own write: read again
        finally:
            filtered.stub.DeleteDocuments(pb.DeleteRequest(tenant="acme", ids=["late-1"]))
    finally:
        filtered.stub.DeleteDocuments(pb.DeleteRequest(tenant="globex", ids=["late-0"]))


@pytest.mark.parametrize("mode", [pb.SEARCH_MODE_DENSE, pb.SEARCH_MODE_HYBRID, pb.SEARCH_MODE_AUTO])
@pytest.mark.parametrize("fusion", [pb.FUSION_RRF, pb.FUSION_RESCORE])
def test_every_retriever_and_fusion_sees_only_matching_points(stack: Stack, mode: int, fusion: int) -> None:
    keep = sorted(stack.titles)[::3]
    flt = {"must": [{"key": "doc_id", "match": {"any": keep}}]}
    for doc_id in keep[:3]:
        res = stack.stub.Search(pb.SearchRequest(tenant=TENANT, query=stack.titles[doc_id], top_k=10, mode=mode,
                                                 fusion=fusion, with_payload=True, filter=_struct(flt)))
        assert res.hits and all(h.payload["doc_id"] in keep for h in res.hits)
        assert all(s.retriever for h in res.hits for s in h.sources)

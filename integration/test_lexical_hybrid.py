"""HYBRID's lexical list: BM25 over the caller's own documents only, fused by DBSF or RRF, following its
writes."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import numpy as np
import pytest

from genret.client import search_request
from genret.data.lexical import Bm25
from genret.errors import ResourceExhausted
from genret.metrics import REGISTRY
from genret.ranking.fusion import dbsf, rrf
from genret.serving.lexical import LexicalIndexes
from genret.store import QdrantStore
from genret.types import Fusion, Mode, SearchQuery
from genret.v1 import genret_pb2 as pb

from .conftest import OTHER, TENANT, Stack

QUERY = "supersonic flow over wings"


def _texts(store: QdrantStore, tenant: str) -> tuple[list[str], list[str]]:
    docs = list(store.scroll_tenant(tenant))
    return [d.point_id for d in docs], [f"{d.title} {d.text}" for d in docs]


def test_lexical_scores_come_from_the_tenants_own_documents(stack: Stack) -> None:
    got = LexicalIndexes(stack.store).search(OTHER, QUERY, 10)
    ids, texts = _texts(stack.store, OTHER)
    rows, scores = Bm25(texts).top([QUERY], 10)
    want = [(ids[r], float(s)) for r, s in zip(rows[0].tolist(), scores[0].tolist(), strict=True) if s > 0]
    assert got and [p for p, _ in got] == [p for p, _ in want]
    np.testing.assert_allclose([s for _, s in got], [s for _, s in want], rtol=2e-6)
    # Over both tenants' documents the same texts score otherwise: no statistic is shared.
    _, theirs = _texts(stack.store, TENANT)
    mixed = Bm25(texts + theirs).scores([QUERY])[0]
    assert any(abs(mixed[ids.index(pid)] - s) > 1e-3 for pid, s in got)
    # A filter's points only.
    kept = set(ids[:2])
    assert {pid for pid, _ in LexicalIndexes(stack.store).search(OTHER, QUERY, 10, lambda p: kept)} <= kept


@pytest.mark.parametrize("fusion, fuse", [(Fusion.RRF, rrf), (Fusion.DBSF, dbsf)])
def test_hybrid_fuses_the_generative_dense_and_lexical_lists(stack: Stack, fusion: Fusion,
                                                              fuse: Callable[..., list]) -> None:
    q = SearchQuery(OTHER, QUERY, 10, 20, Mode.HYBRID, fusion=fusion)
    hits = stack.engine.search([q])[0]
    lists = {name: [(h.point_id, h.score) for h in stack.engine.search([SearchQuery(OTHER, QUERY, 20, 20, m)])[0]]
             for name, m in (("generative", Mode.GENERATIVE), ("dense", Mode.DENSE))}
    lists["lexical"] = LexicalIndexes(stack.store).search(OTHER, QUERY, 20)
    assert [(h.point_id, h.score) for h in hits] == [(f.point_id, f.score) for f in fuse(lists)][:10]
    assert any("lexical" in h.source_names for h in hits)
    without = stack.engine.search([dataclasses.replace(q, lexical=False)])[0]
    del lists["lexical"]
    assert [h.point_id for h in without] == [f.point_id for f in fuse(lists)][:10]
    assert all("lexical" not in h.source_names for h in without)
    # Over gRPC, a request chooses; an uncalibrated index's default fusion is DBSF.
    for name in (fusion.value, "default") if fusion == Fusion.DBSF else (fusion.value,):
        for lexical in (True, False):
            resp = stack.stub.Search(search_request(OTHER, QUERY, 10, "hybrid", name, 20, lexical=lexical), timeout=60)
            assert [h.point_id for h in resp.hits] == [h.point_id for h in (hits if lexical else without)]


def test_the_server_can_turn_the_lexical_list_off(stack: Stack) -> None:
    saved = stack.engine.config
    stack.engine.config = dataclasses.replace(saved, hybrid_lexical=False)
    try:
        for mode in (Mode.HYBRID, Mode.AUTO):
            hits = stack.engine.search([SearchQuery(OTHER, QUERY, 10, 20, mode, fusion=Fusion.RRF)])[0]
            assert hits and all("lexical" not in h.source_names for h in hits)
    finally:
        stack.engine.config = saved


def _hybrid(stack: Stack, tenant: str, query: str) -> list[tuple[str, list[str]]]:
    """(document id, retrievers that returned it) of each hit of a HYBRID search over gRPC."""
    resp = stack.stub.Search(pb.SearchRequest(tenant=tenant, query=query, top_k=10, beam_size=20,
                                              mode=pb.SEARCH_MODE_HYBRID, with_payload=True), timeout=60)
    assert all(h.payload.fields["tenant"].string_value == tenant for h in resp.hits)
    return [(h.payload.fields["doc_id"].string_value, [s.retriever for s in h.sources]) for h in resp.hits]


def test_the_lexical_list_follows_the_tenants_writes(stack: Stack) -> None:
    tenant, query = "lexicon", "quixotic hyperboloid nozzle"
    docs = [("a", "heat transfer in laminar boundary layers"), ("b", "buckling of cylindrical shells")]
    stack.stub.UpsertDocuments(pb.UpsertRequest(tenant=tenant, documents=[
        pb.Document(id=i, title=t, text=t) for i, t in docs]), timeout=60)
    try:
        assert all("lexical" not in sources for _, sources in _hybrid(stack, tenant, query))  # no word matches
        stack.stub.UpsertDocuments(pb.UpsertRequest(tenant=tenant, documents=[
            pb.Document(id="c", title="nozzles", text="a quixotic hyperboloid nozzle")]), timeout=60)
        lexical = [d for d, sources in _hybrid(stack, tenant, query) if "lexical" in sources]
        assert lexical == ["c"]
        stack.stub.DeleteDocuments(pb.DeleteRequest(tenant=tenant, ids=["c"]), timeout=60)
        stack.stub.UpsertDocuments(pb.UpsertRequest(tenant=f"{tenant}-other", documents=[
            pb.Document(id="d", title="nozzles", text="a quixotic hyperboloid nozzle")]), timeout=60)
        after = _hybrid(stack, tenant, query)  # another tenant holding the words is not reached
        assert {d for d, _ in after} <= {"a", "b"} and all("lexical" not in s for _, s in after)
    finally:
        stack.stub.DeleteDocuments(pb.DeleteRequest(tenant=tenant, ids=["a", "b", "c"]), timeout=60)
        stack.stub.DeleteDocuments(pb.DeleteRequest(tenant=f"{tenant}-other", ids=["d"]), timeout=60)


def test_writes_change_the_held_lexical_index_in_place_as_a_fresh_build_would_score(stack: Stack) -> None:
    """Upserts, a replaced text and deletes reach the tenant's held index without a build, and leave the
    scores a fresh build from Qdrant gives."""
    tenant, lexical = "lexicon-live", stack.engine._lexical
    docs = [pb.Document(id=str(i), title=t, text=t) for i, t in enumerate(
        ["heat transfer in laminar boundary layers", "buckling of cylindrical shells", "supersonic flow over wings",
         "laminar flow over a flat plate", "shock waves in a nozzle"])]
    queries = ["laminar flow", "quixotic hyperboloid nozzle", "wings", "flat plate"]

    def as_fresh() -> None:
        for q in queries:
            got, fresh = lexical.search(tenant, q, 10), LexicalIndexes(stack.store).search(tenant, q, 10)
            assert [p for p, _ in got] == [p for p, _ in fresh]
            np.testing.assert_allclose([s for _, s in got], [s for _, s in fresh], rtol=2e-6)

    stack.stub.UpsertDocuments(pb.UpsertRequest(tenant=tenant, documents=docs), timeout=60)
    try:
        lexical.prepare(tenant)
        built, in_place = lexical._built[tenant], _changes("in_place")
        stack.stub.UpsertDocuments(pb.UpsertRequest(tenant=tenant, documents=[
            pb.Document(id="q", title="nozzles", text="a quixotic hyperboloid nozzle")]), timeout=60)
        assert [d for d, s in _hybrid(stack, tenant, queries[1]) if "lexical" in s][:1] == ["q"]
        as_fresh()
        stack.stub.UpsertDocuments(pb.UpsertRequest(tenant=tenant, documents=[  # a text replaced
            pb.Document(id="q", title="plates", text="flat plate in laminar flow")]), timeout=60)
        assert all(d != "q" for d, s in _hybrid(stack, tenant, queries[1]) if "lexical" in s)
        as_fresh()
        stack.stub.DeleteDocuments(pb.DeleteRequest(tenant=tenant, ids=["3", "q"]), timeout=60)
        as_fresh()
        assert lexical._built[tenant] is built  # changed in place: not one build since the first
        assert lexical.held()[tenant] == len(docs) - 1 and _changes("in_place") - in_place == 3
        dropped = _changes("dropped")
        lexical.changed(tenant)  # what changed is not known: dropped
        assert tenant not in lexical.held() and _changes("dropped") - dropped == 1
    finally:
        stack.stub.DeleteDocuments(pb.DeleteRequest(tenant=tenant, ids=[d.id for d in docs]), timeout=60)


def test_a_tenant_with_no_indexable_word_gets_no_lexical_list(stack: Stack) -> None:
    tenant = "lexicon-stop"
    stack.stub.UpsertDocuments(pb.UpsertRequest(tenant=tenant, documents=[
        pb.Document(id="s", title="the", text="of and the")]), timeout=60)
    try:
        hits = _hybrid(stack, tenant, "the wings")
        assert [d for d, _ in hits] == ["s"] and all("lexical" not in s for _, s in hits)
    finally:
        stack.stub.DeleteDocuments(pb.DeleteRequest(tenant=tenant, ids=["s"]), timeout=60)



@pytest.mark.parametrize("written", [False, True])
def test_a_search_builds_its_tenants_lexical_index_before_it_joins_a_batch(stack: Stack, written: bool) -> None:
    """The build runs in the caller's worker thread, never on the engine thread that decodes a batch of
    several tenants' searches, so no batch-mate waits for it, not even when the tenant's write drops the
    index between the build and the batch: the search keeps what its preparation built."""
    lexical = stack.engine._lexical
    builds: list[str] = []  # the thread of each build
    reads: list[tuple[str, bool]] = []  # (thread, whether the tenant's index was held) of each read
    build, index = lexical._build, lexical._index

    def recorded_build(tenant: str) -> object:
        builds.append(threading.current_thread().name)
        return build(tenant)

    def recorded_index(tenant: str, fresh: bool) -> object:
        on_engine = threading.current_thread().name == "genret-engine"
        if on_engine and written:
            lexical.changed(OTHER)  # the tenant's write lands after the preparation
        reads.append((threading.current_thread().name, lexical.ready(tenant)))
        return index(tenant, fresh)

    lexical.changed(OTHER)  # as after a write: the next search needs a fresh build
    lexical._build, lexical._index = recorded_build, recorded_index  # type: ignore[method-assign]
    try:
        resp = stack.stub.Search(search_request(OTHER, QUERY, 10, "hybrid", "rrf", 20), timeout=60)
    finally:
        del lexical._build, lexical._index
    assert any("lexical" in [s.retriever for s in h.sources] for h in resp.hits)
    assert len(builds) == 1 and builds[0].startswith("genret-prepare")  # built before, never in the batch
    assert any(thread == "genret-engine" for thread, _ in reads)
    assert any(thread != "genret-engine" and not held for thread, held in reads)
    assert lexical.ready(OTHER) == (not written)  # a build its write overtook served its search, not held
    # Searches that do not fuse the lexical list build nothing.
    lexical.changed(OTHER)
    for mode, fusion in ((Mode.DENSE, Fusion.DEFAULT), (Mode.GENERATIVE, Fusion.DEFAULT),
                         (Mode.HYBRID, Fusion.WEIGHTED)):
        stack.engine.prepare(SearchQuery(OTHER, QUERY, 10, 20, mode, fusion=fusion))
    stack.engine.prepare(SearchQuery("no-such-tenant", QUERY, 10, 20, Mode.HYBRID, fusion=Fusion.RRF))
    assert OTHER not in lexical.held() and "no-such-tenant" not in lexical.held()


class _Reads:
    """The collection's store, counting each tenant's scrolls (one per lexical index build) and counts."""

    def __init__(self, store: QdrantStore) -> None:
        self.store, self.scrolls, self.counts = store, Counter[str](), Counter[str]()

    def count_tenant(self, tenant: str) -> int:
        self.counts[tenant] += 1
        return self.store.count_tenant(tenant)

    def scroll_tenant(self, tenant: str) -> Iterator[Any]:
        self.scrolls[tenant] += 1
        return iter(self.store.scroll_tenant(tenant))


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _changes(how: str) -> float:
    return REGISTRY.get_sample_value("genret_lexical_changes_total", {"how": how}) or 0.0


def _refused() -> float:
    return REGISTRY.get_sample_value("genret_lexical_builds_total", {"outcome": "refused"}) or 0.0


def test_what_happens_to_a_tenants_lexical_index_depends_on_that_tenant_alone(stack: Stack) -> None:
    """The limit is each tenant's own: an index within it is built once and held whatever other tenants hold
    or search, and goes only by the tenant's own writes or idleness; a tenant over it is refused after a
    count, its documents never read, and that changes nothing for the other tenants."""
    sizes = {t: len(_texts(stack.store, t)[0]) for t in (TENANT, OTHER)}
    assert sizes[OTHER] < sizes[TENANT]
    answers = {t: LexicalIndexes(stack.store).search(t, QUERY, 10) for t in sizes}
    reads, clock = _Reads(stack.store), _Clock()
    indexes = LexicalIndexes(reads, max_docs=sizes[TENANT], idle_s=60, clock=clock)  # type: ignore[arg-type]
    for _ in range(3):  # together more than the limit: each tenant's own index is within it
        clock.now += 10
        assert all(indexes.search(t, QUERY, 10) == answers[t] for t in sizes)
    assert indexes.held() == sizes and reads.scrolls == {TENANT: 1, OTHER: 1}
    assert REGISTRY.get_sample_value("genret_lexical_documents") == sum(sizes.values())
    clock.now += 50
    assert indexes.search(OTHER, QUERY, 10) == answers[OTHER]
    clock.now += 11  # TENANT idle for longer than idle_s: its own idleness lets it go, OTHER's stays
    assert indexes.held() == {OTHER: sizes[OTHER]}
    indexes.changed(OTHER)  # its own write drops it
    assert indexes.held() == {}
    before, counted = _refused(), reads.counts[TENANT]
    small = LexicalIndexes(reads, max_docs=sizes[OTHER], idle_s=60, clock=clock)  # type: ignore[arg-type]

    def refused() -> None:
        with pytest.raises(ResourceExhausted, match="GENRET_LEXICAL_TENANT_MAX_DOCS"):
            small.search(TENANT, QUERY, 10)
        assert small.search(OTHER, QUERY, 10) == answers[OTHER]

    for _ in range(3):
        refused()
    assert reads.scrolls[TENANT] == 1 and reads.counts[TENANT] - counted == 1  # counted once, never read
    assert small.held() == {OTHER: sizes[OTHER]} and small.tracked() == 2 and _refused() - before == 3
    small.changed(TENANT, [], ())  # its write: counted again on its next search
    refused()
    clock.now += 30
    refused()
    assert reads.counts[TENANT] - counted == 2
    clock.now += 31  # the count is older than idle_s: counted again
    refused()
    assert reads.counts[TENANT] - counted == 3 and reads.scrolls[TENANT] == 1


def test_what_is_kept_about_a_tenant_goes_with_its_index_and_its_searches(stack: Stack) -> None:
    """Searches and writes naming ever more tenants grow nothing that outlives them: an index and a
    refusal go after ``idle_s``, a build's bookkeeping when it ends. A build its tenant's write overtook is
    served but not held."""
    clock = _Clock()
    indexes = LexicalIndexes(stack.store, max_docs=1, idle_s=60, clock=clock)
    ghosts = [f"nobody-{i}" for i in range(20)]
    for tenant in ghosts:  # no documents: an empty index, held until it idles
        assert indexes.search(tenant, QUERY, 10) == []
        indexes.changed(f"writer-{tenant}")  # a write of a tenant that never searched keeps nothing
    with indexes.using(OTHER), pytest.raises(ResourceExhausted):  # over the limit: its count is kept
        indexes.prepare(OTHER)
    assert indexes.tracked() == len(ghosts) + 1
    clock.now += 61
    assert indexes.tracked() == 0
    reads = _Reads(stack.store)
    overtaken = LexicalIndexes(reads, idle_s=60, clock=clock)  # type: ignore[arg-type]
    scroll = reads.scroll_tenant

    def written_meanwhile(tenant: str) -> Iterator[Any]:
        overtaken.changed(tenant)  # the tenant's write lands while its build reads
        return scroll(tenant)

    reads.scroll_tenant = written_meanwhile  # type: ignore[method-assign]
    with overtaken.using(TENANT):
        overtaken.prepare(TENANT)
        assert not overtaken.ready(TENANT) and overtaken.tracked() == 1  # kept for its search in flight only
        reads.scroll_tenant = scroll  # type: ignore[method-assign]
        assert overtaken.search(TENANT, QUERY, 10) and reads.scrolls[TENANT] == 1  # the search keeps its build
    assert overtaken.tracked() == 0
    assert overtaken.search(TENANT, QUERY, 10) and overtaken.ready(TENANT) and overtaken.tracked() == 1


def test_a_tenants_waiting_searches_share_one_build_and_never_hold_up_another_tenant(stack: Stack) -> None:
    """While one tenant's index build is stalled, its many concurrent searches wait on that one build
    (one worker thread, not one each), and another tenant's search is served meanwhile."""
    lexical = stack.engine._lexical
    stack.engine.search([SearchQuery(TENANT, QUERY, 10, 20, Mode.HYBRID, fusion=Fusion.RRF)])  # TENANT built
    release, entered = threading.Event(), []
    build = lexical._build

    def stalled(tenant: str) -> object:
        if tenant == OTHER:
            entered.append(threading.current_thread().name)
            release.wait(60)
        return build(tenant)

    lexical.changed(OTHER)
    lexical._build = stalled  # type: ignore[method-assign]
    try:
        waiting = [stack.stub.Search.future(search_request(OTHER, QUERY, 10, "hybrid", "rrf", 20), timeout=90)
                   for _ in range(12)]
        mine = stack.stub.Search(search_request(TENANT, QUERY, 10, "hybrid", "rrf", 20), timeout=30)
        assert mine.hits and not any(f.done() for f in waiting)  # served while the other tenant's build stalls
        assert len(entered) == 1  # twelve searches, one build thread
        assert entered[0].startswith("genret-prepare")  # the builds' own threads, not the default executor's
        release.set()
        assert all(f.result().hits for f in waiting)
    finally:
        release.set()
        del lexical._build
    assert len(entered) == 1


def test_a_search_sees_the_writes_acknowledged_before_it_began(stack: Stack) -> None:
    """A search that finds its tenant's build under way waits for it; if the tenant's write landed while
    that build read, it prepares again rather than search an index without the write."""
    lexical, tenant, query = stack.engine._lexical, "lexicon-race", "quixotic hyperboloid nozzle"
    stack.stub.UpsertDocuments(pb.UpsertRequest(tenant=tenant, documents=[
        pb.Document(id="a", title="shells", text="buckling of cylindrical shells")]), timeout=60)
    read, release = threading.Event(), threading.Event()
    build = lexical._build

    def read_then_stall(name: str) -> object:
        built = build(name)
        if name == tenant and not release.is_set():
            read.set()
            release.wait(60)
        return built

    lexical._build = read_then_stall  # type: ignore[method-assign]
    try:
        first = stack.stub.Search.future(search_request(tenant, query, 10, "hybrid", "rrf", 20), timeout=90)
        assert read.wait(60)  # its build has read the tenant's one document
        stack.stub.UpsertDocuments(pb.UpsertRequest(tenant=tenant, documents=[
            pb.Document(id="b", title="nozzles", text="a quixotic hyperboloid nozzle")]), timeout=60)
        second = stack.stub.Search.future(search_request(tenant, query, 10, "hybrid", "rrf", 20), timeout=90)
        for _ in range(600):  # until the second search waits on the first one's build
            if lexical._users.get(tenant) == 2:
                break
            time.sleep(0.01)
        release.set()
        lexical_hits = [h.payload.fields["doc_id"].string_value for h in second.result().hits
                        if "lexical" in [s.retriever for s in h.sources]]
        assert lexical_hits == ["b"]  # the written document, found by its words
        assert first.result().hits
    finally:
        release.set()
        del lexical._build
        stack.stub.DeleteDocuments(pb.DeleteRequest(tenant=tenant, ids=["a", "b"]), timeout=60)


def test_a_tenant_over_its_lexical_limit_is_refused_only_the_lexical_list(stack: Stack) -> None:
    """A tenant with more documents than the limit gets RESOURCE_EXHAUSTED for the searches that fuse the
    lexical list, naming the limit and the way around it; its other searches, and every search of the
    tenants within the limit, are served as before."""
    lexical = stack.engine._lexical
    big, small = "lexicon-big", "lexicon-small"
    words = "supersonic flow over swept wings at high incidence"
    docs = {big: [pb.Document(id=f"d{i}", title=big, text=f"{words} {i}") for i in range(3)],
            small: [pb.Document(id="d0", title=small, text=words)]}
    for tenant, batch in docs.items():
        stack.stub.UpsertDocuments(pb.UpsertRequest(tenant=tenant, documents=batch), timeout=60)
    max_docs = lexical._max_docs
    lexical._max_docs = 2
    try:
        with pytest.raises(grpc.RpcError) as refused:
            stack.stub.Search(search_request(big, QUERY, 10, "hybrid", "rrf", 20), timeout=60)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "GENRET_LEXICAL_TENANT_MAX_DOCS" in (refused.value.details() or "")
        assert "without_lexical" in (refused.value.details() or "")
        for request in (search_request(big, QUERY, 10, "hybrid", "rrf", 20, lexical=False),
                        search_request(big, QUERY, 10, "dense"), search_request(big, QUERY, 10, "generative")):
            assert stack.stub.Search(request, timeout=60).hits
        mine = stack.stub.Search(search_request(small, QUERY, 10, "hybrid", "rrf", 20), timeout=60)
        assert any("lexical" in [s.retriever for s in h.sources] for h in mine.hits) and lexical.ready(small)
        assert big not in lexical.held()
    finally:
        lexical._max_docs = max_docs
        for tenant, batch in docs.items():
            stack.stub.DeleteDocuments(pb.DeleteRequest(tenant=tenant, ids=[d.id for d in batch]), timeout=60)


def test_a_search_ends_while_its_tenants_writes_overtake_every_build(stack: Stack) -> None:
    """A write lands while each of the tenant's builds reads, so no build is ever held: its searches are
    still served, each from a build begun after it, rather than wait for a build no write overtakes."""
    lexical = stack.engine._lexical
    build = lexical._build

    def overtaken(tenant: str) -> object:
        built = build(tenant)
        lexical.changed(tenant)  # the tenant's next write lands before the build is done
        return built

    lexical.changed(OTHER)
    lexical._build = overtaken  # type: ignore[method-assign]
    try:
        searches = [stack.stub.Search.future(search_request(OTHER, QUERY, 10, "hybrid", "rrf", 20), timeout=30)
                    for _ in range(4)]
        assert all(any("lexical" in [s.retriever for s in h.sources] for h in f.result().hits) for f in searches)
        assert not lexical.ready(OTHER)
    finally:
        del lexical._build

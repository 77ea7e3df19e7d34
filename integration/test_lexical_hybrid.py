"""HYBRID's lexical list: BM25 over the caller's own documents only, fused by DBSF or RRF, following its
writes."""

from __future__ import annotations

import dataclasses
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from genret.client import search_request
from genret.data.lexical import Bm25
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
    assert got and got == [(ids[r], float(s)) for r, s in zip(rows[0].tolist(), scores[0].tolist(), strict=True)
                           if s > 0]
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


def test_a_tenant_with_no_indexable_word_gets_no_lexical_list(stack: Stack) -> None:
    tenant = "lexicon-stop"
    stack.stub.UpsertDocuments(pb.UpsertRequest(tenant=tenant, documents=[
        pb.Document(id="s", title="the", text="of and the")]), timeout=60)
    try:
        hits = _hybrid(stack, tenant, "the wings")
        assert [d for d, _ in hits] == ["s"] and all("lexical" not in s for _, s in hits)
    finally:
        stack.stub.DeleteDocuments(pb.DeleteRequest(tenant=tenant, ids=["s"]), timeout=60)



@pytest.mark.parametrize("cap", ["fits", "does not fit"])
def test_a_search_builds_its_tenants_lexical_index_before_it_joins_a_batch(stack: Stack, cap: str) -> None:
    """The build runs in the caller's worker thread, never on the engine thread that decodes a batch of
    several tenants' searches, so no batch-mate waits for it; a build that does not fit under the cap is
    held for the search that made it, then let go."""
    lexical = stack.engine._lexical
    calls: list[tuple[str, bool]] = []  # (thread, whether the tenant's index was already built)
    index, max_docs = lexical._index, lexical._max_docs

    def recorded(tenant: str) -> object:
        calls.append((threading.current_thread().name, lexical.ready(tenant)))
        return index(tenant)

    lexical.changed(OTHER)  # as after a write: the next search needs a fresh build
    lexical._index = recorded  # type: ignore[method-assign]
    lexical._max_docs = max_docs if cap == "fits" else 1
    try:
        resp = stack.stub.Search(search_request(OTHER, QUERY, 10, "hybrid", "rrf", 20), timeout=60)
    finally:
        del lexical._index
        lexical._max_docs = max_docs
    assert any("lexical" in [s.retriever for s in h.sources] for h in resp.hits)
    engine_calls = [built for thread, built in calls if thread == "genret-engine"]
    assert engine_calls and all(engine_calls)  # the batch read it, already built
    assert any(thread != "genret-engine" and not built for thread, built in calls)  # built before
    assert lexical.ready(OTHER) == (cap == "fits")  # a build over the cap goes with its search
    # Searches that do not fuse the lexical list build nothing.
    lexical.changed(OTHER)
    for mode, fusion in ((Mode.DENSE, Fusion.DEFAULT), (Mode.GENERATIVE, Fusion.DEFAULT),
                         (Mode.HYBRID, Fusion.WEIGHTED)):
        stack.engine.prepare(SearchQuery(OTHER, QUERY, 10, 20, mode, fusion=fusion))
    stack.engine.prepare(SearchQuery("no-such-tenant", QUERY, 10, 20, Mode.HYBRID, fusion=Fusion.RRF))
    assert OTHER not in lexical.held() and "no-such-tenant" not in lexical.held()


class _Reads:
    """The collection's store, counting each tenant's scrolls (one per lexical index build)."""

    def __init__(self, store: QdrantStore) -> None:
        self.store, self.scrolls = store, Counter[str]()

    def scroll_tenant(self, tenant: str) -> Iterator[Any]:
        self.scrolls[tenant] += 1
        return iter(self.store.scroll_tenant(tenant))


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_no_tenants_searches_drop_another_tenants_lexical_index(stack: Stack) -> None:
    """Indexes are capped, but one tenant's index is dropped only by its own writes or its own idleness:
    another tenant's builds never push it out, whatever the cap; a build that does not fit is not kept."""
    sizes = {t: len(_texts(stack.store, t)[0]) for t in (TENANT, OTHER)}
    answers = {t: LexicalIndexes(stack.store).search(t, QUERY, 10) for t in sizes}
    reads, clock = _Reads(stack.store), _Clock()
    not_kept = lambda: REGISTRY.get_sample_value("genret_lexical_builds_total", {"kept": "no"}) or 0.0  # noqa: E731
    before = not_kept()
    indexes = LexicalIndexes(reads, max_docs=max(sizes.values()), idle_s=60, clock=clock)  # type: ignore[arg-type]
    assert indexes.search(TENANT, QUERY, 10) == answers[TENANT]
    for _ in range(3):  # OTHER's index does not fit beside TENANT's: built for each search, not kept
        clock.now += 10
        assert indexes.search(OTHER, QUERY, 10) == answers[OTHER]
    assert indexes.held() == {TENANT: sizes[TENANT]} and reads.scrolls == {TENANT: 1, OTHER: 3}
    assert indexes.overflows(OTHER) and not indexes.overflows(TENANT)
    with indexes.using(OTHER):  # while OTHER has searches in flight, their build is held for them
        indexes.prepare(OTHER)
        assert indexes.ready(OTHER) and indexes.search(OTHER, QUERY, 10) == answers[OTHER]
    assert not indexes.ready(OTHER) and reads.scrolls[OTHER] == 4
    assert not_kept() - before == 4  # each build that was not kept is counted for the operator
    assert indexes.search(TENANT, QUERY, 10) == answers[TENANT] and reads.scrolls[TENANT] == 1  # never rebuilt
    clock.now += 61  # TENANT idle for longer than idle_s: its own idleness lets it go
    assert indexes.held() == {}
    assert indexes.search(OTHER, QUERY, 10) == answers[OTHER] and indexes.held() == {OTHER: sizes[OTHER]}
    assert not indexes.overflows(OTHER)  # its build fits again
    assert REGISTRY.get_sample_value("genret_lexical_documents") == sizes[OTHER]
    indexes.changed(OTHER)  # its own write drops it
    assert indexes.held() == {}
    alone = LexicalIndexes(stack.store, max_docs=1)  # larger than the cap: served, never kept
    assert alone.search(OTHER, QUERY, 10) == answers[OTHER] and alone.held() == {}
    both = LexicalIndexes(stack.store, max_docs=sum(sizes.values()))
    both.search(TENANT, QUERY, 10)
    both.search(OTHER, QUERY, 10)
    assert both.held() == sizes


def test_what_is_kept_about_a_tenant_goes_with_its_index_and_its_searches(stack: Stack) -> None:
    """Searches and writes naming ever more tenants grow nothing that outlives them: an index goes after
    ``idle_s``, a build's bookkeeping when it ends, a tenant's overflow ``idle_s`` after its last build that
    did not fit. A build its tenant's write overtook is served but not kept."""
    clock = _Clock()
    indexes = LexicalIndexes(stack.store, max_docs=1, idle_s=60, clock=clock)
    ghosts = [f"nobody-{i}" for i in range(20)]
    for tenant in ghosts:  # no documents: an empty index, held until it idles
        assert indexes.search(tenant, QUERY, 10) == []
        indexes.changed(f"writer-{tenant}")  # a write of a tenant that never searched keeps nothing
    assert indexes.search(OTHER, QUERY, 10) and indexes.overflows(OTHER)  # larger than the cap: not kept
    assert indexes.tracked() == len(ghosts) + 1
    clock.now += 61
    assert indexes.tracked() == 0 and not indexes.overflows(OTHER)
    reads = _Reads(stack.store)
    overtaken = LexicalIndexes(reads, idle_s=60, clock=clock)  # type: ignore[arg-type]
    scroll = reads.scroll_tenant

    def written_meanwhile(tenant: str) -> Iterator[Any]:
        overtaken.changed(tenant)  # the tenant's write lands while its build reads
        return scroll(tenant)

    reads.scroll_tenant = written_meanwhile  # type: ignore[method-assign]
    assert overtaken.search(TENANT, QUERY, 10) and not overtaken.ready(TENANT) and overtaken.tracked() == 0
    reads.scroll_tenant = scroll  # type: ignore[method-assign]
    assert overtaken.search(TENANT, QUERY, 10) and overtaken.ready(TENANT) and overtaken.tracked() == 1


def test_a_tenants_waiting_searches_share_one_build_and_never_hold_up_another_tenant(stack: Stack) -> None:
    """While one tenant's index build is stalled, its many concurrent searches wait on that one build
    (one worker thread, not one each), and another tenant's search is served meanwhile."""
    lexical = stack.engine._lexical
    stack.engine.search([SearchQuery(TENANT, QUERY, 10, 20, Mode.HYBRID, fusion=Fusion.RRF)])  # TENANT built
    release, entered = threading.Event(), []
    index = lexical._index

    def stalled(tenant: str) -> object:
        if tenant == OTHER and threading.current_thread().name != "genret-engine":
            entered.append(threading.current_thread().name)
            release.wait(60)
        return index(tenant)

    lexical.changed(OTHER)
    lexical._index = stalled  # type: ignore[method-assign]
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
        del lexical._index
    assert len(entered) == 1


def test_rebuilds_of_indexes_too_large_to_keep_never_take_the_other_tenants_build_threads(stack: Stack) -> None:
    """Two tenants whose lexical indexes do not fit under the cap rebuild them for each burst of searches.
    Their builds run in one lane of their own: with both stalled, a third tenant's first build still gets a
    thread and its search is served."""
    lexical = stack.engine._lexical
    big, small = ["spill-a", "spill-b"], "spill-small"
    words = "supersonic flow over swept wings at high incidence"
    docs = {t: [pb.Document(id=f"d{i}", title=t, text=f"{words} {i}") for i in range(3)] for t in big}
    docs[small] = [pb.Document(id="d0", title=small, text=words)]
    for tenant, batch in docs.items():
        stack.stub.UpsertDocuments(pb.UpsertRequest(tenant=tenant, documents=batch), timeout=60)
    release, entered = threading.Event(), Counter[str]()
    index, max_docs = lexical._index, lexical._max_docs

    def stalled(tenant: str) -> object:
        if tenant in big and threading.current_thread().name != "genret-engine":
            entered[threading.current_thread().name] += 1
            release.wait(60)
        return index(tenant)

    search = lambda tenant: search_request(tenant, QUERY, 10, "hybrid", "rrf", 20)  # noqa: E731
    lexical._max_docs = sum(lexical.held().values()) + 2  # the small tenant's index fits, the big ones' do not
    try:
        for tenant in big:  # first builds: not kept, so these tenants overflow from now on
            assert stack.stub.Search(search(tenant), timeout=60).hits and not lexical.ready(tenant)
            assert stack.engine.overflows(tenant)
        lexical._index = stalled  # type: ignore[method-assign]
        waiting = [stack.stub.Search.future(search(t), timeout=90) for t in big]
        mine = stack.stub.Search(search(small), timeout=30)  # its first build, on a thread of its own
        assert mine.hits and not any(f.done() for f in waiting)
        assert lexical.ready(small) and not stack.engine.overflows(small)
        assert set(entered) == {"genret-prepare-overflow_0"} and entered.total() == 1  # the other waits its turn
        release.set()
        assert all(f.result().hits for f in waiting)
        assert entered == {"genret-prepare-overflow_0": 2}
    finally:
        release.set()
        del lexical._index
        lexical._max_docs = max_docs
        for tenant, batch in docs.items():
            stack.stub.DeleteDocuments(pb.DeleteRequest(tenant=tenant, ids=[d.id for d in batch]), timeout=60)

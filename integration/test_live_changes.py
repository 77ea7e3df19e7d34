"""Upserts and deletes over gRPC: Qdrant first, then the tenant's trie; isolation on every path."""

from __future__ import annotations

import itertools
import threading

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from genret.serving import namespaces
from genret.store import DOCID_KEY, point_id_for
from genret.v1 import genret_pb2 as pb

from .conftest import TENANT, Stack

TEXTS = ["supersonic flutter of thin wings", "heat transfer in laminar boundary layers",
         "buckling of cylindrical shells under pressure", "shock wave interaction with a flat plate",
         "slender body theory for missiles", "transition to turbulence on swept wings"]
_names = itertools.count()


def fresh_tenant() -> str:
    return f"live-{next(_names)}"


def upsert(stack: Stack, tenant: str, docs: list[tuple[str, str]]) -> pb.UpsertResponse:
    req = pb.UpsertRequest(tenant=tenant, documents=[pb.Document(id=i, title=t, text=t) for i, t in docs])
    return stack.stub.UpsertDocuments(req, timeout=60)


def delete(stack: Stack, tenant: str, ids: list[str]) -> pb.DeleteResponse:
    return stack.stub.DeleteDocuments(pb.DeleteRequest(tenant=tenant, ids=ids), timeout=60)


def found(stack: Stack, tenant: str, query: str, mode: int = pb.SEARCH_MODE_GENERATIVE) -> list[str]:
    """Document ids of an exhaustive search (beam covers every docid of a small tenant)."""
    resp = stack.stub.Search(pb.SearchRequest(tenant=tenant, query=query, top_k=50, beam_size=100, mode=mode,
                                              with_payload=True), timeout=60)
    for h in resp.hits:
        assert h.payload.fields["tenant"].string_value == tenant
    return [h.payload.fields["doc_id"].string_value for h in resp.hits]


def test_upserted_documents_are_searchable_on_return_and_isolated(stack: Stack) -> None:
    tenant = fresh_tenant()
    resp = upsert(stack, tenant, [(f"n{i}", t) for i, t in enumerate(TEXTS)])
    assert [d.id for d in resp.documents] == [f"n{i}" for i in range(len(TEXTS))]
    assert all(d.created and d.docid for d in resp.documents)
    assert len({d.docid for d in resp.documents}) == len(TEXTS)
    for mode in (pb.SEARCH_MODE_GENERATIVE, pb.SEARCH_MODE_DENSE):
        assert sorted(found(stack, tenant, "wings", mode)) == sorted(f"n{i}" for i in range(len(TEXTS)))
    # The existing tenants never see them.
    assert not set(found(stack, TENANT, TEXTS[0])) & {f"n{i}" for i in range(len(TEXTS))}
    info = stack.stub.GetIndexInfo(pb.GetIndexInfoRequest(tenant=tenant), timeout=10)
    assert info.namespaces[0].documents == len(TEXTS)


def test_same_document_id_in_two_tenants_names_two_points(stack: Stack) -> None:
    a, b = fresh_tenant(), fresh_tenant()
    ra = upsert(stack, a, [("same", TEXTS[0])])
    rb = upsert(stack, b, [("same", TEXTS[1])])
    assert ra.documents[0].point_id != rb.documents[0].point_id
    assert ra.documents[0].docid == rb.documents[0].docid  # one docid string, two namespaces
    delete(stack, a, ["same"])
    assert found(stack, b, "anything") == ["same"]


def test_update_keeps_the_docid_and_delete_is_final(stack: Stack) -> None:
    tenant = fresh_tenant()
    first = upsert(stack, tenant, [("k", TEXTS[0]), ("gone", TEXTS[1])]).documents
    again = upsert(stack, tenant, [("k", TEXTS[2])]).documents[0]
    assert not again.created and again.docid == first[0].docid
    resp = delete(stack, tenant, ["gone", "never-was"])
    assert list(resp.deleted) == ["gone"] and list(resp.not_found) == ["never-was"]
    for mode in (pb.SEARCH_MODE_GENERATIVE, pb.SEARCH_MODE_DENSE):
        assert found(stack, tenant, TEXTS[1], mode) == ["k"]
    assert not stack.store.retrieve(tenant, [point_id_for(tenant, "gone")])
    delete(stack, tenant, ["k"])
    with pytest.raises(grpc.RpcError) as info:
        found(stack, tenant, "x")
    assert info.value.code() == grpc.StatusCode.NOT_FOUND  # the tenant has no documents left


@pytest.mark.parametrize("docs, words", [
    ([], "empty"),
    ([("", "text")], "document id is empty"),
    ([("x" * 257, "text")], "limit is 256"),
    ([("a\x00b", "text")], "control character"),
    ([("a", "x"), ("a", "y")], "repeat"),
    ([("a", "")], "neither"),
    ([("a", "x" * 100_001)], "limit per document"),
])
def test_bad_upserts_are_rejected_whole(stack: Stack, docs: list[tuple[str, str]], words: str) -> None:
    tenant = fresh_tenant()
    upsert(stack, tenant, [("keep", TEXTS[0])])
    bad = [*docs, ("fine", TEXTS[1])] if docs else []
    with pytest.raises(grpc.RpcError) as info:
        upsert(stack, tenant, bad)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and words in info.value.details()
    assert found(stack, tenant, "x") == ["keep"]  # nothing of the bad batch was written
    assert not stack.store.retrieve(tenant, [point_id_for(tenant, "fine")])


def test_writes_need_a_tenant_and_a_served_index(stack: Stack) -> None:
    for req, code in [(pb.UpsertRequest(documents=[pb.Document(id="a", text="b")]), grpc.StatusCode.INVALID_ARGUMENT),
                      (pb.UpsertRequest(tenant="t", index="elsewhere", documents=[pb.Document(id="a", text="b")]),
                       grpc.StatusCode.NOT_FOUND)]:
        with pytest.raises(grpc.RpcError) as info:
            stack.stub.UpsertDocuments(req, timeout=30)
        assert info.value.code() == code
    with pytest.raises(grpc.RpcError) as info:
        stack.stub.DeleteDocuments(pb.DeleteRequest(tenant="t", ids=[]), timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_searches_during_writes_see_whole_snapshots(stack: Stack) -> None:
    """While one thread adds and removes documents, every search answers with documents of its tenant
    that are in either the state before or after some write, never an error."""
    tenant = fresh_tenant()
    upsert(stack, tenant, [("base", TEXTS[0])])
    stop = threading.Event()
    errors: list[Exception] = []

    def writer() -> None:
        try:
            for i in range(6):
                upsert(stack, tenant, [(f"w{i}", TEXTS[i % len(TEXTS)])])
                delete(stack, tenant, [f"w{i}"])
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            stop.set()

    t = threading.Thread(target=writer)
    t.start()
    seen = 0
    while not stop.is_set():
        ids = found(stack, tenant, "wing")
        assert "base" in ids and len(ids) <= 2 and all(i == "base" or i.startswith("w") for i in ids)
        seen += 1
    t.join()
    assert not errors and seen > 0
    assert found(stack, tenant, "wing") == ["base"]


ops = st.lists(st.tuples(st.sampled_from(["up", "del"]), st.integers(0, 1), st.integers(0, 7)),
               min_size=1, max_size=12)


@pytest.mark.parametrize("small", [0, 2], ids=["whole-rebuilds", "delta-tries"])
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=ops, query=st.sampled_from(TEXTS))
def test_random_changes_keep_every_tenant_inside_its_own_live_documents(stack: Stack, small: int, ops,  # type: ignore[no-untyped-def]
                                                                        query: str) -> None:
    """Property: after any sequence of upserts and deletes in two fresh tenants, in every search mode,
    no hit is from another tenant, no deleted document is returned, every generative hit's docid
    resolves to a live point of the caller's tenant, and every score a third tenant sees is bit-identical
    to what it was before. ``delta-tries`` treats every tenant of more than 2 documents as big: its new
    docids go into a delta trie and its deleted ones are counted out of the base where they are."""
    with pytest.MonkeyPatch.context() as mp:
        if small:
            mp.setattr(namespaces, "SMALL", small)
        check_random_changes(stack, ops, query)


def check_random_changes(stack: Stack, ops, query: str) -> None:  # type: ignore[no-untyped-def]
    bystander = scored(stack, TENANT, query)
    tenants = [fresh_tenant(), fresh_tenant()]
    live: list[set[str]] = [set(), set()]
    for op, t, d in ops:
        doc = f"d{d}"
        if op == "up":
            upsert(stack, tenants[t], [(doc, TEXTS[d % len(TEXTS)])])
            live[t].add(doc)
        else:
            delete(stack, tenants[t], [doc])
            live[t].discard(doc)
    for t, tenant in enumerate(tenants):
        for mode in (pb.SEARCH_MODE_GENERATIVE, pb.SEARCH_MODE_DENSE, pb.SEARCH_MODE_HYBRID, pb.SEARCH_MODE_AUTO):
            if not live[t]:
                with pytest.raises(grpc.RpcError) as info:
                    found(stack, tenant, query, mode)
                assert info.value.code() == grpc.StatusCode.NOT_FOUND
                continue
            resp = stack.stub.Search(pb.SearchRequest(tenant=tenant, query=query, top_k=50, beam_size=100,
                                                      mode=mode, with_payload=True), timeout=60)
            ids = [h.payload.fields["doc_id"].string_value for h in resp.hits]
            assert all(h.payload.fields["tenant"].string_value == tenant for h in resp.hits)
            assert set(ids) <= live[t]  # nothing deleted, nothing foreign
            if mode != pb.SEARCH_MODE_AUTO:  # AUTO may answer with one retriever's top hits only
                assert set(ids) == live[t]  # exhaustive: every live document
            if mode == pb.SEARCH_MODE_GENERATIVE:
                for h in resp.hits:
                    point = stack.store.retrieve(tenant, [h.point_id])[h.point_id]
                    assert point.docid == h.docid and h.payload.fields[DOCID_KEY].string_value == h.docid
    assert scored(stack, TENANT, query) == bystander


def scored(stack: Stack, tenant: str, query: str) -> dict[int, list[tuple[str, float]]]:
    """(point id, score) of every hit in every mode: generative scores come from an exhaustive search."""
    out = {}
    for mode in (pb.SEARCH_MODE_GENERATIVE, pb.SEARCH_MODE_DENSE, pb.SEARCH_MODE_HYBRID):
        resp = stack.stub.Search(pb.SearchRequest(tenant=tenant, query=query, top_k=50, beam_size=100, mode=mode),
                                 timeout=60)
        out[mode] = [(h.point_id, h.score) for h in resp.hits]
    return out

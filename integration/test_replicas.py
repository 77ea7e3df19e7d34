"""Two sidecars over one Qdrant: the writer takes the writes, a read replica (--read-only --follow-s)
refuses them and follows what the writer did, tenant by tenant, without a restart."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator

import grpc
import pytest
from qdrant_client import models

from genret.api.server import ServerThread
from genret.serving.engine import Engine
from genret.store import DOC_ID_KEY, VECTOR_NAME, QdrantStore, point_id_for
from genret.v1 import genret_pb2 as pb
from genret.v1 import genret_pb2_grpc as pb_grpc

from .conftest import OTHER, Stack
from .test_live_changes import delete, fresh_tenant, upsert


@pytest.fixture
def replica(stack: Stack) -> Iterator[pb_grpc.GenRetStub]:
    cfg = dataclasses.replace(stack.config, read_only=True, follow_s=0.2)
    store = QdrantStore(cfg, client=stack.store.client)
    store._lock = stack.store._lock  # one embedded Qdrant: both replicas' calls take turns on it
    with ServerThread(cfg, Engine.load(cfg, store)) as server, grpc.insecure_channel(server.target) as channel:
        yield pb_grpc.GenRetStub(channel)


def _ids(stub: pb_grpc.GenRetStub, tenant: str) -> set[str]:
    try:
        resp = stub.Search(pb.SearchRequest(tenant=tenant, query="wing", top_k=50, beam_size=100, with_payload=True),
                           timeout=30)
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.NOT_FOUND  # no such tenant (yet, or any more)
        return set()
    return {h.payload["doc_id"] for h in resp.hits}


def _until(check: object, limit_s: float = 15) -> None:
    t0 = time.monotonic()
    while not check():  # type: ignore[operator]
        assert time.monotonic() - t0 < limit_s, "the replica did not follow"
        time.sleep(0.1)


@pytest.mark.e2e
def test_a_read_replica_follows_the_writer_and_refuses_writes(stack: Stack, replica: pb_grpc.GenRetStub) -> None:
    tenant = fresh_tenant()
    upsert(stack, tenant, [("a", "supersonic flutter of thin wings"), ("b", "heat transfer on swept wings")])
    _until(lambda: _ids(replica, tenant) == {"a", "b"})
    delete(stack, tenant, ["a"])
    _until(lambda: _ids(replica, tenant) == {"b"})
    with pytest.raises(grpc.RpcError) as err:
        replica.UpsertDocuments(pb.UpsertRequest(tenant=tenant, documents=[pb.Document(id="c", text="x")]), timeout=30)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "--read-only" in (err.value.details() or "")
    with pytest.raises(grpc.RpcError) as err:
        replica.DeleteDocuments(pb.DeleteRequest(tenant=tenant, ids=["b"]), timeout=30)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert _ids(stack.stub, tenant) == {"b"}  # the refused delete changed nothing
    delete(stack, tenant, ["b"])
    _until(lambda: _ids(replica, tenant) == set())


def _lexical(stub: pb_grpc.GenRetStub, tenant: str, query: str) -> set[str]:
    resp = stub.Search(pb.SearchRequest(tenant=tenant, query=query, top_k=10, beam_size=20, with_payload=True,
                                        mode=pb.SEARCH_MODE_HYBRID), timeout=30)
    return {h.payload["doc_id"] for h in resp.hits if "lexical" in [s.retriever for s in h.sources]}


@pytest.mark.e2e
def test_a_read_replica_follows_a_text_replaced_under_the_same_id(stack: Stack, replica: pb_grpc.GenRetStub) -> None:
    """A text rewritten under the same id keeps its docid, so the namespaces do not change; the replica's
    lexical list learns of it from the text hashes in the same scroll."""
    tenant, query = fresh_tenant(), "quixotic hyperboloid nozzle"
    upsert(stack, tenant, [("a", "supersonic flutter of thin wings"), ("b", "heat transfer on swept wings")])
    _until(lambda: _ids(replica, tenant) == {"a", "b"})
    assert _lexical(replica, tenant, query) == set()  # the replica holds the tenant's lexical index now
    upsert(stack, tenant, [("a", query)])
    assert _lexical(stack.stub, tenant, query) == {"a"}
    _until(lambda: _lexical(replica, tenant, query) == {"a"})
    delete(stack, tenant, ["a", "b"])


def _write_straight(stack: Stack, tenant: str, doc_id: str, text: str) -> None:
    """A point written to Qdrant through neither door: no docid, no text hash."""
    cfg = stack.config
    payload = {cfg.tenant_key: tenant, DOC_ID_KEY: doc_id, cfg.title_key: "", cfg.text_key: text}
    stack.store.client.upsert(cfg.collection, [models.PointStruct(id=point_id_for(tenant, doc_id), payload=payload,
                                                                  vector={VECTOR_NAME: [0.1] * 384})])


@pytest.mark.e2e
def test_a_read_replica_follows_a_text_rewritten_straight_in_qdrant(stack: Stack, replica: pb_grpc.GenRetStub) -> None:
    """A point written straight to Qdrant carries no text hash; written again under the same id with
    another text, the replica's follow reads its text to learn of it."""
    tenant, query = fresh_tenant(), "quixotic hyperboloid nozzle"
    upsert(stack, tenant, [("a", "supersonic flutter of thin wings")])
    _until(lambda: _ids(replica, tenant) == {"a"})
    _write_straight(stack, tenant, "s", "heat transfer on swept wings")
    _until(lambda: _lexical(replica, tenant, "swept heat transfer") == {"s"})
    assert _lexical(replica, tenant, query) == set()
    _write_straight(stack, tenant, "s", query)
    _until(lambda: _lexical(replica, tenant, query) == {"s"})
    stack.store.delete_points(tenant, [point_id_for(tenant, "s")])
    delete(stack, tenant, ["a"])


def test_follow_reads_the_texts_of_points_written_straight_to_qdrant(stack: Stack) -> None:
    """A point without a text hash has its text read by each follow: its tenant's lexical index is dropped
    when that text changes under the same id, and kept while it does not."""
    engine, lexical = stack.engine, stack.engine._lexical
    tenant = fresh_tenant()
    upsert(stack, tenant, [("a", "supersonic flutter of thin wings")])
    _write_straight(stack, tenant, "s", "heat transfer on swept wings")
    saved = engine.writer._seen_texts
    try:
        engine.follow()
        lexical.prepare(tenant)
        assert tenant not in engine.follow() and tenant in lexical.held()
        _write_straight(stack, tenant, "s", "heat transfer on swept wings")  # the same text again
        assert tenant not in engine.follow() and tenant in lexical.held()
        _write_straight(stack, tenant, "s", "quixotic hyperboloid nozzle")
        assert tenant in engine.follow() and tenant not in lexical.held()
    finally:
        engine.writer._seen_texts = saved
        stack.store.delete_points(tenant, [point_id_for(tenant, "s")])
        delete(stack, tenant, ["a"])


def test_follow_drops_lexical_indexes_built_from_texts_that_changed(stack: Stack) -> None:
    """The first follow drops every tenant's lexical index (built before it, it may predate a change), and
    reports none of them; after that, only a tenant whose digest of text hashes moved is dropped."""
    writer, lexical = stack.engine.writer, stack.engine._lexical
    truth, texts = stack.store.docids_and_texts_by_tenant()
    saved = writer._seen_texts
    try:
        writer._seen_texts = None
        lexical.prepare(OTHER)
        assert OTHER not in writer.follow(truth, texts) and OTHER not in lexical.held()
        lexical.prepare(OTHER)
        assert OTHER not in writer.follow(truth, texts) and OTHER in lexical.held()
        assert OTHER in writer.follow(truth, {**texts, OTHER: texts[OTHER] ^ 1})
        assert OTHER not in lexical.held()
    finally:
        writer._seen_texts = saved

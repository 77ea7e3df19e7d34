"""Qdrant goes away mid-run and comes back: requests answer UNAVAILABLE at once, health turns NOT_SERVING,
and everything recovers without a restart, with every acknowledged write kept and no refused one applied."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from genret.api.server import ServerThread
from genret.config import Config
from genret.data.beir import load_corpus
from genret.data.loader import load_beir
from genret.store import point_id_for
from genret.v1 import genret_pb2 as pb
from genret.v1 import genret_pb2_grpc as pb_grpc

from .conftest import small_corpus, trained_engine
from .faults import OutageClient, outage_store

TENANT = "acme"
SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


def _health(channel: grpc.Channel) -> int:
    return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status


def _until(predicate: object, limit_s: float = 10.0) -> float:
    t0 = time.monotonic()
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() - t0 < limit_s, "condition not reached"
        time.sleep(0.05)
    return time.monotonic() - t0


def _upsert(stub: pb_grpc.GenRetStub, doc_id: str) -> pb.UpsertResponse:
    doc = pb.Document(id=doc_id, title=f"note {doc_id}", text=f"wind tunnel measurements of panel {doc_id}")
    return stub.UpsertDocuments(pb.UpsertRequest(tenant=TENANT, documents=[doc]), timeout=30)


@pytest.mark.e2e
def test_qdrant_outage_answers_unavailable_and_recovers_without_restart(tmp_path: Path) -> None:
    corpus = small_corpus(tmp_path, 12)
    cfg = Config(qdrant_path=str(tmp_path / "qdrant"), collection="outage", index_dir=str(tmp_path / "index"),
                 port=0, device="cpu", health_interval_s=0.2)
    store = outage_store(cfg)
    client: OutageClient = store.client  # type: ignore[assignment]
    load_beir(store, corpus, TENANT, with_vectors=True)
    titles = {d.doc_id: d.title for d in load_corpus(corpus)}
    engine = trained_engine(store, cfg, titles, "semantic", epochs=5)
    query = pb.SearchRequest(tenant=TENANT, query=next(iter(titles.values())), top_k=3)
    with ServerThread(cfg, engine) as server, grpc.insecure_channel(server.target) as channel:
        stub = pb_grpc.GenRetStub(channel)
        assert stub.Search(query, timeout=30).hits
        assert _upsert(stub, "before").documents
        client.down = True
        for mode in (pb.SEARCH_MODE_GENERATIVE, pb.SEARCH_MODE_DENSE, pb.SEARCH_MODE_HYBRID):
            t0 = time.monotonic()
            with pytest.raises(grpc.RpcError) as err:
                stub.Search(pb.SearchRequest(tenant=TENANT, query=query.query, mode=mode), timeout=30)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE, err.value.details()
            assert "Qdrant" in (err.value.details() or "")
            assert time.monotonic() - t0 < 1.0  # fails at once, not after a decode or a timeout
        with pytest.raises(grpc.RpcError) as err:
            _upsert(stub, "refused")
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        _until(lambda: _health(channel) == NOT_SERVING)

        client.down = False
        _until(lambda: _health(channel) == SERVING)
        _until(lambda: _search_ok(stub, query))
        assert _upsert(stub, "after").documents
        got = store.retrieve(TENANT, [point_id_for(TENANT, d) for d in ("before", "refused", "after")])
        assert {doc.doc_id for doc in got.values()} == {"before", "after"}
        assert all(doc.docid for doc in got.values())
        live = {pid for pid, _ in engine.namespaces.entries(TENANT)}
        assert {point_id_for(TENANT, "before"), point_id_for(TENANT, "after")} <= live
    store.close()


def _search_ok(stub: pb_grpc.GenRetStub, query: pb.SearchRequest) -> bool:
    try:
        return bool(stub.Search(query, timeout=30).hits)
    except grpc.RpcError:
        return False

"""Tenants that cannot touch each other, over a real socket: docid pools, scores, queues, point ids, keys,
request checks and write sizes. Each test names the way one tenant could reach another that it closes."""

from __future__ import annotations

import dataclasses
import itertools
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest
import torch
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from genret.api.auth import add_key
from genret.api.server import ServerThread
from genret.config import Config
from genret.data.beir import load_corpus
from genret.data.loader import load_beir
from genret.indexing.indexer import IndexOptions, build_index
from genret.indexing.training import TrainConfig
from genret.indexing.training_data import PairOptions
from genret.serving.engine import Engine
from genret.store import QdrantStore
from genret.v1 import genret_pb2 as pb
from genret.v1 import genret_pb2_grpc as pb_grpc

from .conftest import INPUT_TOKENS, OTHER, TENANT, Stack, small_corpus

A, B = "tenA", "tenB"
SPARE = 16  # spare atomic docids of the index
QUOTA = 12  # new docids one tenant may hold
_names = itertools.count()


def code_of(call: Any) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code()


def details_of(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code(), info.value.details() or ""


@dataclasses.dataclass
class Atomic:
    config: Config
    store: QdrantStore
    engine: Engine
    stub: pb_grpc.GenRetStub
    titles: dict[str, dict[str, str]]  # tenant -> doc_id -> title
    texts: dict[str, dict[str, str]]


@pytest.fixture(scope="module")
def atomic(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Atomic]:
    """An embedding-seeded atomic index of two tenants: every document is one model row, so writes change the
    model itself (the case where one tenant's writes could reach another's scores)."""
    tmp = tmp_path_factory.mktemp("atomic")
    cfg = Config(qdrant_path=str(tmp / "q"), collection="iso", index_dir=str(tmp / "idx"), device="cpu", port=0,
                 tenant_max_new_docids=QUOTA)
    store = QdrantStore(cfg)
    load_beir(store, small_corpus(tmp, 10, name="a"), A)
    load_beir(store, small_corpus(tmp, 8, 10, "b"), B)
    train = TrainConfig(epochs=1, batch_size=16, freeze_encoder=True, freeze_docid_embeddings=True,
                        max_input_tokens=INPUT_TOKENS, progress=False)
    torch.manual_seed(0)
    build_index(store, cfg.index_dir, IndexOptions(scheme="atomic", docid_init="embeddings", spare_docids=SPARE,
                                                   pairs=PairOptions(max_chunks=0), train=train), torch.device("cpu"))
    engine = Engine.load(cfg, store)
    docs = {A: load_corpus(tmp / "a"), B: load_corpus(tmp / "b")}
    with ServerThread(cfg, engine) as server, grpc.insecure_channel(server.target) as channel:
        yield Atomic(cfg, store, engine, pb_grpc.GenRetStub(channel),
                     {t: {d.doc_id: d.title for d in ds} for t, ds in docs.items()},
                     {t: {d.doc_id: d.text for d in ds} for t, ds in docs.items()})
    store.close()


def upsert(stub: pb_grpc.GenRetStub, tenant: str, docs: list[tuple[str, str, str]],
           metadata: tuple[tuple[str, str], ...] = ()) -> pb.UpsertResponse:
    req = pb.UpsertRequest(tenant=tenant, documents=[pb.Document(id=i, title=t, text=x) for i, t, x in docs])
    return stub.UpsertDocuments(req, timeout=120, metadata=metadata)


def delete(stub: pb_grpc.GenRetStub, tenant: str, ids: list[str]) -> pb.DeleteResponse:
    return stub.DeleteDocuments(pb.DeleteRequest(tenant=tenant, ids=ids), timeout=120)


def scores(stub: pb_grpc.GenRetStub, tenant: str, query: str, **kw: Any) -> list[tuple[str, str, float]]:
    """(point id, docid, score) of an exhaustive generative search (beam over every docid of the tenant)."""
    resp = stub.Search(pb.SearchRequest(tenant=tenant, query=query, top_k=50, beam_size=100, **kw), timeout=60)
    return [(h.point_id, h.docid, h.score) for h in resp.hits]


# --- 1. docid pool ---------------------------------------------------------------------------------------------


def test_churn_and_rejected_writes_of_one_tenant_never_use_up_another_tenants_docids(atomic: Atomic) -> None:
    """Deleted docids come back, docids reserved by a refused write come back, and a tenant at its quota is
    refused RESOURCE_EXHAUSTED while other tenants write on."""
    doc = [("title", "a document about wings")]
    for r in range(3):  # 24 docids taken and given back: more than the index's 16 spare ones
        ids = [f"churn{r}-{i}" for i in range(8)]
        upsert(atomic.stub, A, [(i, *doc[0]) for i in ids])
        delete(atomic.stub, A, ids)
    b_ids = [f"b-new{i}" for i in range(6)]
    upsert(atomic.stub, B, [(i, *doc[0]) for i in b_ids])  # 10 spare docids left
    refused = [(f"many{i}", *doc[0]) for i in range(QUOTA)]  # within A's quota, more than the index has free
    code, why = details_of(lambda: upsert(atomic.stub, A, refused))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "index --add" in why
    taken = upsert(atomic.stub, A, refused[:10])  # the refused write gave its 10 reserved docids back
    assert len({d.docid for d in taken.documents}) == 10
    delete(atomic.stub, A, [i for i, _, _ in refused[:10]])
    delete(atomic.stub, B, b_ids)

    held = [(f"held{i}", *doc[0]) for i in range(QUOTA)]
    upsert(atomic.stub, A, held)
    code, why = details_of(lambda: upsert(atomic.stub, A, [("one-more", *doc[0])]))
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and f"{QUOTA}" in why
    assert upsert(atomic.stub, B, [("b-still", *doc[0])]).documents[0].created  # B is not affected
    delete(atomic.stub, A, ["held0"])
    assert upsert(atomic.stub, A, [("one-more", *doc[0])]).documents[0].created  # a freed place is A's again
    delete(atomic.stub, A, [f"held{i}" for i in range(1, QUOTA)] + ["one-more"])
    delete(atomic.stub, B, ["b-still"])


# --- 2. scores ---------------------------------------------------------------------------------------------------


def test_writes_of_one_tenant_leave_every_score_of_another_bit_identical(atomic: Atomic) -> None:
    b_doc = next(iter(atomic.titles[B]))
    title, text = atomic.titles[B][b_doc], atomic.texts[B][b_doc]
    queries = [title, "a query about nothing in particular"]
    before = {q: scores(atomic.stub, B, q) for q in queries}
    thresholded = len(scores(atomic.stub, B, title, score_threshold=before[title][2][2]))
    copies = [(f"copy{i}", title, text) for i in range(8)]  # A writes copies of B's document
    upsert(atomic.stub, A, copies)
    assert {q: scores(atomic.stub, B, q) for q in queries} == before
    assert len(scores(atomic.stub, B, title, score_threshold=before[title][2][2])) == thresholded == 3
    delete(atomic.stub, A, [c[0] for c in copies])
    assert {q: scores(atomic.stub, B, q) for q in queries} == before


writes = st.lists(st.tuples(st.sampled_from(["up", "del"]), st.integers(0, 5)), min_size=1, max_size=8)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=writes)
def test_any_writes_of_one_tenant_leave_another_tenants_scores_bit_identical(atomic: Atomic, ops: Any) -> None:
    """Property: after any sequence of upserts and deletes by A, B's exhaustive generative scores, in both
    scoring modes, are bit-identical to what they were."""
    title = next(iter(atomic.titles[B].values()))
    before = scores(atomic.stub, B, title)
    live: set[str] = set()
    for op, d in ops:
        if op == "up":
            upsert(atomic.stub, A, [(f"p{d}", title, f"{title} {d}")])
            live.add(f"p{d}")
        else:
            delete(atomic.stub, A, [f"p{d}"])
            live.discard(f"p{d}")
        assert scores(atomic.stub, B, title) == before
    if live:
        delete(atomic.stub, A, sorted(live))


# --- 3. fair service ----------------------------------------------------------------------------------------------


class _Gated:
    """The real engine, with its batches recorded and held at a gate (so a queue can be built up first)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self.gate = threading.Event()
        self.batches: list[list[str]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def search(self, queries: Any, deadline: float | None = None, checkpoint: Any = None) -> Any:
        self.batches.append([q.tenant for q in queries])
        self.gate.wait(60)
        return self._engine.search(queries, deadline, checkpoint)


def test_a_flooding_tenant_gets_its_share_of_each_batch_and_no_more(stack: Stack) -> None:
    gated = _Gated(stack.engine)
    cfg = dataclasses.replace(stack.config, port=0, batch_rows=2)
    with ServerThread(cfg, gated) as server, grpc.insecure_channel(server.target) as ch:  # type: ignore[arg-type]
        stub = pb_grpc.GenRetStub(ch)
        with ThreadPoolExecutor(max_workers=24) as pool:
            flood = [pool.submit(stub.Search, pb.SearchRequest(tenant=TENANT, query=f"wing {i}", top_k=2, beam_size=4),
                                 timeout=60) for i in range(20)]
            time.sleep(0.5)  # A's requests are queued behind the held batch
            other = pool.submit(stub.Search, pb.SearchRequest(tenant=OTHER, query="wing", top_k=2, beam_size=4),
                                timeout=60)
            time.sleep(0.5)
            gated.gate.set()
            assert other.result().hits and all(f.result().hits for f in flood)
    served = next(i for i, b in enumerate(gated.batches) if OTHER in b)
    assert served == 1 and gated.batches[1] == [OTHER]  # decoded between the steps of A's batch in flight
    assert all(len(b) <= 2 for b in gated.batches)  # and no batch is longer than batch_rows


def test_a_tenants_stuck_write_does_not_hold_up_another_tenants_write(stack: Stack,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    slow = f"slow-{next(_names)}"
    release = threading.Event()
    real = stack.store.upsert_documents

    def upsert_documents(tenant: str, *args: Any, **kw: Any) -> Any:
        if tenant == slow:
            release.wait(60)  # Qdrant taking its time over this tenant's write
        return real(tenant, *args, **kw)

    monkeypatch.setattr(stack.store, "upsert_documents", upsert_documents)
    with ThreadPoolExecutor(max_workers=4) as pool:
        stuck = [pool.submit(upsert, stack.stub, slow, [(f"big{i}", "t", "wing " * 2000)]) for i in range(3)]
        time.sleep(0.3)
        try:
            done = upsert(stack.stub, f"quick-{next(_names)}", [("one", "t", "a small document about wings")])
            assert done.documents[0].created
            assert not any(f.done() for f in stuck)
        finally:
            release.set()
        assert all(f.result().documents for f in stuck)


# --- 4. batches within the limits ---------------------------------------------------------------------------


def test_a_batch_within_the_limits_succeeds_on_an_idle_server(stack: Stack) -> None:
    rows = [pb.SearchRequest(tenant=TENANT, query=f"wing {i}", top_k=1, beam_size=2) for i in range(200)]
    resp = stack.stub.SearchBatch(pb.SearchBatchRequest(requests=rows), timeout=300)
    assert len(resp.responses) == 200 and all(r.hits for r in resp.responses)


# --- 5. point ids ------------------------------------------------------------------------------------------------


def test_no_tenant_name_or_document_id_can_forge_another_tenants_point_id(stack: Stack) -> None:
    victim_tenant = f"tenA-{next(_names)}"
    upsert(stack.stub, victim_tenant, [("x", "t", "a document that must stay")])
    for tenant, doc_id in ((victim_tenant, "x\x00victim"), (f"{victim_tenant}\x00x", "victim"),
                           (victim_tenant, "line\nbreak"), ("tab\tname", "d")):
        code, why = details_of(lambda t=tenant, d=doc_id: upsert(stack.stub, t, [(d, "t", "overwrite")]))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "control character" in why
    code, why = details_of(lambda: delete(stack.stub, victim_tenant, ["x\x00victim"]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    code, why = details_of(lambda: stack.stub.Search(pb.SearchRequest(tenant="a\x00b", query="wing"), timeout=30))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "control character" in why
    hits = stack.stub.Search(pb.SearchRequest(tenant=victim_tenant, query="document", with_payload=True), timeout=30)
    assert [h.payload.fields["text"].string_value for h in hits.hits] == ["a document that must stay"]


# --- 6 and 7. keys ------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Keyed:
    stub: pb_grpc.GenRetStub
    channel: grpc.Channel
    keys_file: Path
    acme: str
    admin: str


@pytest.fixture()
def keyed(stack: Stack, tmp_path: Path) -> Iterator[Keyed]:
    keys = tmp_path / "keys.json"
    acme = add_key(keys, "acme-app", [TENANT], admin=False)
    admin = add_key(keys, "ops", [], admin=True)
    cfg = dataclasses.replace(stack.config, keys_file=str(keys), port=0, keys_grace_s=0.0)
    with ServerThread(cfg, stack.engine) as server, grpc.insecure_channel(server.target) as channel:
        yield Keyed(pb_grpc.GenRetStub(channel), channel, keys, acme, admin)


def _search(k: Keyed, key: str) -> pb.SearchResponse:
    return k.stub.Search(pb.SearchRequest(tenant=TENANT, query="wing", top_k=1), metadata=(("x-api-key", key),),
                         timeout=30)


@pytest.mark.parametrize("damage", ["delete", "garble"])
def test_a_missing_or_unreadable_key_file_fails_closed(keyed: Keyed, damage: str) -> None:
    good = keyed.keys_file.read_text()
    assert _search(keyed, keyed.acme).hits
    if damage == "delete":
        keyed.keys_file.unlink()
    else:
        keyed.keys_file.write_text("{not json")
    code, why = details_of(lambda: keyed.stub.ReloadKeys(pb.ReloadKeysRequest(), metadata=(("x-api-key", keyed.admin),),
                                                         timeout=30))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and str(keyed.keys_file) in why
    time.sleep(1.1)  # the file is checked at most once a second; the grace period is 0 here
    for key in (keyed.acme, keyed.admin):
        code, why = details_of(lambda k=key: _search(keyed, k))
        assert code == grpc.StatusCode.UNAUTHENTICATED and "key file" in why
    keyed.keys_file.write_text(good)
    time.sleep(1.1)
    assert _search(keyed, keyed.acme).hits


def test_authentication_comes_before_any_request_check(keyed: Keyed) -> None:
    unauth = grpc.StatusCode.UNAUTHENTICATED
    assert code_of(lambda: keyed.stub.SearchBatch(pb.SearchBatchRequest(), timeout=10)) == unauth
    big = pb.SearchBatchRequest(requests=[pb.SearchRequest(tenant=TENANT, query="q")] * 300)
    code, why = details_of(lambda: keyed.stub.SearchBatch(big, timeout=10))
    assert code == unauth and "256" not in why
    raw = keyed.channel.unary_unary("/genret.v1.GenRet/Search")
    assert code_of(lambda: raw(b"\xff\xff\xff\xff\x0f", timeout=10)) == unauth
    assert code_of(lambda: raw(b"\xff\xff\xff\xff\x0f", timeout=10, metadata=(("x-api-key", keyed.acme),))) \
        == grpc.StatusCode.INVALID_ARGUMENT
    assert code_of(lambda: keyed.stub.UpsertDocuments(pb.UpsertRequest(tenant=""), timeout=10)) == unauth


def _list_services(k: Keyed, key: str | None) -> list[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(k.channel)
    md = () if key is None else (("x-api-key", key),)
    responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
                                          metadata=md, timeout=10)
    return [s.name for r in responses for s in r.list_services_response.service]


def test_health_is_open_and_reflection_needs_the_admin_key(keyed: Keyed) -> None:
    health = health_pb2_grpc.HealthStub(keyed.channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    assert code_of(lambda: _list_services(keyed, None)) == grpc.StatusCode.UNAUTHENTICATED
    assert code_of(lambda: _list_services(keyed, keyed.acme)) == grpc.StatusCode.PERMISSION_DENIED
    assert "genret.v1.GenRet" in _list_services(keyed, keyed.admin)


# --- 8. write sizes and memory ------------------------------------------------------------------------------------


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def test_large_writes_are_bounded_and_their_memory_is_returned(stack: Stack) -> None:
    tenant = f"big-{next(_names)}"
    limit = stack.config.max_write_chars
    too_big = [(f"d{i}", "t", "w " * 47_500) for i in range(160)]  # 15 MB in one request
    code, why = details_of(lambda: upsert(stack.stub, tenant, too_big))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and f"{limit}" in why
    upsert(stack.stub, tenant, [("warm", "t", "wing " * 100)])  # the dense encoder is loaded once
    delete(stack.stub, tenant, ["warm"])
    words = "wing flutter shock boundary layer heat transfer pressure laminar turbulent".split()
    text = " ".join(itertools.islice(itertools.cycle(words), 14_000))[:95_000]
    docs = [(f"d{i}", "t", f"{i} {text}") for i in range(limit // 96_000)]
    before = _rss_mb()
    upsert(stack.stub, tenant, docs)
    delete(stack.stub, tenant, [d[0] for d in docs])
    assert _rss_mb() - before < 150, json.dumps({"before_mb": before, "after_mb": _rss_mb()})

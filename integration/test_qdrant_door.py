"""The Qdrant-wire front door, driven by unmodified qdrant-client over real gRPC.

A collection is created and filled by plain qdrant-client code (its own unnamed vectors, its own payload
field names, integer point ids), indexed by genret, and served with the front door on. The same calls run
once against an embedded Qdrant directly and once through the door must give the same answers; genret
leaves must give the generative retriever's hits, fused with Qdrant's formulas.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from qdrant_client import AsyncQdrantClient, QdrantClient, models
from qdrant_client.hybrid.fusion import distribution_based_score_fusion, reciprocal_rank_fusion

from genret.api.auth import add_key
from genret.api.server import ServerThread
from genret.config import Config
from genret.data.beir import demo_corpus_path
from genret.serving.engine import Engine
from genret.serving.lexical import LexicalIndexes
from genret.store import DOCID_KEY, TEXT_HASH_KEY, QdrantStore, text_hash
from genret.store.wire import ServerUpstream
from genret.v1 import genret_pb2 as pb
from genret.v1 import genret_pb2_grpc as pb_grpc

from .conftest import trained_engine

COLLECTION = "articles"
DIM = 16
N_ACME, N_GLOBEX = 14, 6
USER_KEYS = {"org", "heading", "body", "year"}


@dataclasses.dataclass
class Door:
    config: Config
    engine: Engine
    server: ServerThread
    qdrant: QdrantClient  # unmodified qdrant-client pointed at the front door
    stub: pb_grpc.GenRetStub
    docs: list[dict[str, Any]]  # id, org, heading, body, year, vector
    tmp: Path


def _docs() -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in (demo_corpus_path() / "corpus.jsonl").read_text().splitlines()]
    rng = np.random.default_rng(7)
    out = []
    for i, row in enumerate(rows[: N_ACME + N_GLOBEX]):
        out.append({"id": 1000 + i, "org": "acme" if i < N_ACME else "globex", "heading": row["title"],
                    "body": row["text"], "year": 1950 + i, "vector": rng.standard_normal(DIM).tolist()})
    return out


def _client(port: int, **kw: Any) -> QdrantClient:
    return QdrantClient(host="127.0.0.1", grpc_port=port, prefer_grpc=True, cloud_inference=True,
                        check_compatibility=False, **kw)


def _fill(client: QdrantClient | Any, docs: list[dict[str, Any]]) -> None:
    """What a Qdrant user's own code does: a collection with its own vectors and payload names."""
    client.create_collection(COLLECTION, vectors_config=models.VectorParams(size=DIM, distance=models.Distance.COSINE))
    client.upsert(COLLECTION, points=[models.PointStruct(id=d["id"], vector=d["vector"],
                                                         payload={k: d[k] for k in USER_KEYS}) for d in docs])


@pytest.fixture(scope="module")
def door(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Door]:
    tmp = tmp_path_factory.mktemp("door")
    docs = _docs()
    user = QdrantClient(path=str(tmp / "qdrant"))
    _fill(user, docs)
    user.close()
    cfg = Config(qdrant_path=str(tmp / "qdrant"), collection=COLLECTION, index_dir=str(tmp / "index"), port=0,
                 device="cpu", tenant_key="org", text_key="body", title_key="heading", qdrant_port=0)
    store = QdrantStore(cfg)
    engine = trained_engine(store, cfg, {str(d["id"]): d["heading"] for d in docs}, "atomic", epochs=30, lr=5e-3)
    server = ServerThread(cfg, engine, store.upstream()).__enter__()
    channel = grpc.insecure_channel(server.target)
    qdrant = _client(server.door_port)
    try:
        yield Door(cfg, engine, server, qdrant, pb_grpc.GenRetStub(channel), docs, tmp)
    finally:
        qdrant.close()
        channel.close()
        server.stop()
        store.close()


def acme(*extra: models.Condition) -> models.Filter:
    return models.Filter(must=[models.FieldCondition(key="org", match=models.MatchValue(value="acme")), *extra])


def generative(text: str) -> models.Document:
    return models.Document(text=text, model="genret")


# --- the same calls, directly and through the door -------------------------------------------------------
def _script(client: Any, docs: list[dict[str, Any]]) -> list[Any]:
    """Calls that involve no genret leaf, on a collection of their own; every answer, as plain data."""
    name = "plain"
    out: list[Any] = []
    client.create_collection(name, vectors_config=models.VectorParams(size=DIM, distance=models.Distance.COSINE))
    out.append(client.upsert(name, points=[models.PointStruct(id=d["id"], vector=d["vector"],
                                                              payload={k: d[k] for k in USER_KEYS}) for d in docs]))
    q = docs[3]["vector"]
    out.append(client.query_points(name, query=q, limit=5, with_payload=True))
    out.append(client.query_points(name, query=q, query_filter=acme(), limit=4, offset=1, with_vectors=True))
    out.append(client.query_points(name, query=q, limit=3, score_threshold=0.1, with_payload=["heading"]))
    prefetch = [models.Prefetch(query=q, limit=6),
                models.Prefetch(query=docs[5]["vector"], limit=6, filter=acme())]
    out.append(client.query_points(name, prefetch=prefetch, query=models.FusionQuery(fusion=models.Fusion.RRF),
                                   limit=5))
    out.append(client.query_points(name, prefetch=prefetch, query=models.FusionQuery(fusion=models.Fusion.DBSF),
                                   limit=5))
    out.append(client.query_points(name, prefetch=prefetch, query=models.RrfQuery(rrf=models.Rrf(k=5, weights=[2, 1])),
                                   limit=5))
    out.append(client.scroll(name, scroll_filter=acme(), limit=5, with_payload=True))
    out.append(client.count(name, count_filter=acme()))
    out.append(client.retrieve(name, [docs[0]["id"], docs[1]["id"], 999_999], with_vectors=True))
    out.append(client.set_payload(name, {"reviewed": True}, points=[docs[0]["id"]]))
    out.append(client.overwrite_payload(name, {"org": "acme", "body": "x"}, points=[docs[1]["id"]]))
    out.append(client.delete_payload(name, ["year"], points=[docs[2]["id"]]))
    out.append(client.batch_update_points(name, [
        models.UpsertOperation(upsert=models.PointsList(points=[models.PointStruct(
            id=90, vector=docs[0]["vector"], payload={"org": "acme", "body": "batch", "year": 1})])),
        models.SetPayloadOperation(set_payload=models.SetPayload(payload={"year": 2}, filter=models.Filter(
            must=[models.FieldCondition(key="body", match=models.MatchValue(value="batch"))]))),
        models.DeleteOperation(delete=models.PointIdsList(points=[docs[4]["id"]]))]))
    out.append(client.retrieve(name, [90, docs[4]["id"]]))
    out.append(client.delete(name, points_selector=models.FilterSelector(filter=models.Filter(
        must=[models.FieldCondition(key="org", match=models.MatchValue(value="globex"))]))))
    out.append(client.count(name))
    out.append(client.retrieve(name, [d["id"] for d in docs[:3]]))
    out.append(client.collection_exists(name))
    out.append(client.get_collection(name).points_count)
    out.append(client.delete_collection(name))
    return [_plain(x) for x in out]


def _plain(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return _plain(value.model_dump())
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items() if k != "time"}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float):
        return round(value, 5)
    return value


def test_calls_without_genret_answer_as_qdrant_does(door: Door) -> None:
    direct = QdrantClient(path=str(door.tmp / "direct-sync"))
    try:
        assert _script(door.qdrant, door.docs) == _script(direct, door.docs)
    finally:
        direct.close()


def test_async_client_gets_the_same_answers(door: Door) -> None:
    class Sync:  # runs the async client's calls one by one, so one script serves both
        def __init__(self, client: Any) -> None:
            self._client = client

        def __getattr__(self, name: str) -> Callable[..., Any]:
            return lambda *a, **k: loop.run_until_complete(getattr(self._client, name)(*a, **k))

    loop = asyncio.new_event_loop()
    remote = AsyncQdrantClient(host="127.0.0.1", grpc_port=door.server.door_port, prefer_grpc=True,
                               cloud_inference=True, check_compatibility=False)
    direct = AsyncQdrantClient(path=str(door.tmp / "direct-async"))
    try:
        assert _script(Sync(remote), door.docs) == _script(Sync(direct), door.docs)
        got = loop.run_until_complete(remote.query_points(COLLECTION, query=generative(door.docs[0]["heading"]),
                                                          query_filter=acme(), limit=3))
        assert got.points and all(p.payload is not None for p in got.points)
    finally:
        loop.run_until_complete(remote.close())
        loop.run_until_complete(direct.close())
        loop.close()


def test_a_door_in_front_of_a_qdrant_server_forwards_every_call(door: Door) -> None:
    """Server mode: this door's upstream is a gRPC endpoint speaking Qdrant's API (here another door, in front
    of the embedded Qdrant), reached by forwarding bytes; calls, answers and status codes pass unchanged."""
    cfg = dataclasses.replace(door.config, qdrant_port=0)
    with ServerThread(cfg, door.engine, ServerUpstream("http://127.0.0.1", grpc_port=door.server.door_port)) as front:
        client = _client(front.door_port)
        direct = QdrantClient(path=str(door.tmp / "direct-server-mode"))
        try:
            assert _script(client, door.docs) == _script(direct, door.docs)
            text = door.docs[0]["heading"]
            assert ([p.id for p in client.query_points(COLLECTION, query=generative(text), query_filter=acme()).points]
                    == [i for i, _ in _genret_search(door, text, 10)])
            with pytest.raises(grpc.RpcError) as err:
                client.get_collection("missing")
            assert err.value.code() == grpc.StatusCode.NOT_FOUND
        finally:
            client.close()
            direct.close()


def test_errors_carry_qdrant_status_codes(door: Door) -> None:
    for call in (lambda: door.qdrant.get_collection("missing"),
                 lambda: door.qdrant.query_points("missing", query=[0.0] * DIM)):
        with pytest.raises(grpc.RpcError) as err:
            call()
        assert err.value.code() == grpc.StatusCode.NOT_FOUND, err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        door.qdrant.query_points(COLLECTION, query=[0.0] * (DIM + 1))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


# --- genret leaves ---------------------------------------------------------------------------------------
def _genret_search(door: Door, text: str, top_k: int) -> list[tuple[int, float]]:
    res = door.stub.Search(pb.SearchRequest(tenant="acme", query=text, top_k=top_k))
    return [(int(h.point_id), h.score) for h in res.hits]


def test_a_genret_leaf_gives_the_generative_retrievers_hits(door: Door) -> None:
    for d in door.docs[:4]:
        got = door.qdrant.query_points(COLLECTION, query=generative(d["heading"]), query_filter=acme(), limit=5)
        want = _genret_search(door, d["heading"], 5)
        assert [(p.id, round(p.score, 4)) for p in got.points] == [(i, round(s, 4)) for i, s in want]
        assert all(p.payload and p.payload["org"] == "acme" for p in got.points)
    hit = door.qdrant.query_points(COLLECTION, query=generative(door.docs[0]["heading"]), query_filter=acme(),
                                   limit=1).points
    assert hit[0].id == door.docs[0]["id"]


def test_fusion_follows_qdrants_formulas(door: Door) -> None:
    d = door.docs[2]
    gen = models.Prefetch(query=generative(d["heading"]), limit=8)
    dense = models.Prefetch(query=door.docs[6]["vector"], limit=8)
    alone = [door.qdrant.query_points(COLLECTION, prefetch=[p], query=models.FusionQuery(fusion=models.Fusion.RRF),
                                      query_filter=acme(), limit=8).points for p in (gen, dense)]
    lists = [door.qdrant.query_points(COLLECTION, query=generative(d["heading"]), query_filter=acme(), limit=8).points,
             door.qdrant.query_points(COLLECTION, query=door.docs[6]["vector"], query_filter=acme(), limit=8).points]
    assert [[p.id for p in a] for a in alone] == [[p.id for p in x] for x in lists]
    cases = [(models.FusionQuery(fusion=models.Fusion.RRF), lambda r: reciprocal_rank_fusion(r, limit=6)),
             (models.FusionQuery(fusion=models.Fusion.DBSF), lambda r: distribution_based_score_fusion(r, limit=6)),
             (models.RrfQuery(rrf=models.Rrf(k=7, weights=[3.0, 1.0])),
              lambda r: reciprocal_rank_fusion(r, limit=6, ranking_constant_k=7, weights=[3.0, 1.0]))]
    for query, formula in cases:
        got = door.qdrant.query_points(COLLECTION, prefetch=[gen, dense], query=query, query_filter=acme(), limit=6,
                                       with_payload=["heading"])
        want = formula([[p.model_copy() for p in x] for x in lists])
        assert [p.id for p in got.points] == [p.id for p in want]
        # scores cross the wire as float32: equal to its precision, not to six rounded decimals
        assert [p.score for p in got.points] == pytest.approx([p.score for p in want], rel=1e-6, abs=1e-7)
        assert all(set(p.payload or {}) == {"heading"} for p in got.points)
    paged = door.qdrant.query_points(COLLECTION, prefetch=[gen, dense], query=cases[0][0], query_filter=acme(),
                                     limit=3, offset=2)
    assert [p.id for p in paged.points] == [p.id for p in cases[0][1]([[q.model_copy() for q in x]
                                                                       for x in lists])[2:5]]


def test_a_dense_query_reranks_generative_candidates(door: Door) -> None:
    d = door.docs[4]
    got = door.qdrant.query_points(COLLECTION, prefetch=[models.Prefetch(query=generative(d["heading"]), limit=5)],
                                   query=d["vector"], query_filter=acme(), limit=3)
    cands = {p.id for p in door.qdrant.query_points(COLLECTION, query=generative(d["heading"]),
                                                     query_filter=acme(), limit=5).points}
    assert {p.id for p in got.points} <= cands
    assert [p.score for p in got.points] == sorted((p.score for p in got.points), reverse=True)


def test_query_batch_mixes_genret_and_plain_queries(door: Door) -> None:
    d = door.docs[1]
    res = door.qdrant.query_batch_points(COLLECTION, [
        models.QueryRequest(query=generative(d["heading"]), filter=acme(), limit=3),
        models.QueryRequest(query=d["vector"], filter=acme(), limit=3)])
    assert [p.id for p in res[0].points] == [i for i, _ in _genret_search(door, d["heading"], 3)]
    assert res[1].points[0].id == d["id"]
    with pytest.raises(grpc.RpcError) as err:
        door.qdrant.query_points_groups(COLLECTION, group_by="year", query=generative(d["heading"]),
                                        query_filter=acme())
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED


# --- tenancy ---------------------------------------------------------------------------------------------
def _org(door: Door, pid: int) -> str:
    return next(d["org"] for d in door.docs if d["id"] == pid)


def test_a_genret_query_needs_its_tenant_and_cannot_widen_it(door: Door) -> None:
    text = door.docs[N_ACME]["heading"]  # a globex document's title
    with pytest.raises(grpc.RpcError) as err:
        door.qdrant.query_points(COLLECTION, query=generative(text), limit=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    globex = models.FieldCondition(key="org", match=models.MatchValue(value="globex"))
    either = models.FieldCondition(key="org", match=models.MatchAny(any=["acme", "globex"]))
    with pytest.raises(grpc.RpcError) as err:
        door.qdrant.query_points(COLLECTION, query=generative(text), query_filter=models.Filter(must=[either]))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    widen = [models.Filter(must=[*acme().must, either]),models.Filter(must=acme().must, should=[globex]),
             models.Filter(must=acme().must, must_not=[models.FieldCondition(key="org",
                                                                              match=models.MatchValue(value="acme"))]),
             models.Filter(must=[*acme().must, models.Filter(should=[globex])]),
             models.Filter(must=[*acme().must, globex])]
    for flt in widen:
        for query in (generative(text), None):
            prefetch = [models.Prefetch(query=generative(text), limit=10),
                        models.Prefetch(query=door.docs[N_ACME]["vector"], limit=10, filter=models.Filter(should=[globex]))]
            res = door.qdrant.query_points(COLLECTION, query=query or models.FusionQuery(fusion=models.Fusion.RRF),
                                           prefetch=None if query else prefetch, query_filter=flt, limit=10)
            assert all(_org(door, p.id) == "acme" for p in res.points), flt


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_no_query_through_the_door_reaches_another_tenants_or_a_deleted_point(door: Door, data: st.DataObject
                                                                              ) -> None:
    """Writes through the door, then queries of every shape with filters that try to widen the tenant."""
    tenant = data.draw(st.sampled_from(["acme", "globex"]), "tenant")
    other = "globex" if tenant == "acme" else "acme"
    source = data.draw(st.sampled_from(door.docs), "copied document")
    new_ids = [5000 + data.draw(st.integers(0, 999), "id")]
    new_org = data.draw(st.sampled_from([tenant, other]), "new point's tenant")
    door.qdrant.upsert(COLLECTION, [models.PointStruct(
        id=new_ids[0], vector=source["vector"],
        payload={"org": new_org, "heading": source["heading"], "body": source["body"], "year": 3000})])
    deleted: set[int] = set()
    if data.draw(st.booleans(), "delete it again"):
        door.qdrant.delete(COLLECTION, points_selector=models.PointIdsList(points=new_ids))
        deleted.add(new_ids[0])
    mine = models.FieldCondition(key="org", match=models.MatchValue(value=tenant))
    theirs = models.FieldCondition(key="org", match=models.MatchValue(value=other))
    extra = data.draw(st.sampled_from([
        models.Filter(must=[mine]), models.Filter(must=[mine], should=[theirs]),
        models.Filter(must=[mine], must_not=[mine]), models.Filter(must=[mine, models.Filter(should=[theirs])]),
        models.Filter(must=[mine], min_should=models.MinShould(conditions=[theirs, mine], min_count=1))]), "filter")
    gen = generative(source["heading"])
    shape = data.draw(st.sampled_from(["leaf", "rrf", "dbsf", "rerank"]), "query shape")
    wide = models.Prefetch(query=source["vector"], limit=10, filter=models.Filter(should=[theirs]))
    asks: dict[str, dict[str, Any]] = {
        "leaf": {"query": gen},
        "rrf": {"prefetch": [models.Prefetch(query=gen, limit=10), wide],
                "query": models.FusionQuery(fusion=models.Fusion.RRF)},
        "dbsf": {"prefetch": [models.Prefetch(query=gen, limit=10, filter=models.Filter(should=[theirs])), wide],
                 "query": models.FusionQuery(fusion=models.Fusion.DBSF)},
        "rerank": {"prefetch": [models.Prefetch(query=gen, limit=10)], "query": source["vector"]}}
    try:
        got = door.qdrant.query_points(COLLECTION, query_filter=extra, limit=10, **asks[shape]).points
        ids = [p.id for p in got]
        assert not deleted & set(ids)
        orgs = {r.id: (r.payload or {}).get("org") for r in door.qdrant.retrieve(COLLECTION, ids)}
        assert all(orgs.get(i) == tenant for i in ids), (shape, extra, orgs)
    finally:
        door.qdrant.delete(COLLECTION, points_selector=models.PointIdsList(points=new_ids))


def test_tenant_keys_reach_only_their_own_points(door: Door) -> None:
    keys = door.tmp / "keys.json"
    acme_key = add_key(keys, "acme-app", ["acme"], admin=False)
    admin_key = add_key(keys, "ops", [], admin=True)
    cfg = dataclasses.replace(door.config, keys_file=str(keys), qdrant_port=0)
    upstream = door.engine.store.upstream()
    with ServerThread(cfg, door.engine, upstream) as server:
        tenant = _client(server.door_port, api_key=acme_key, https=False)
        admin = _client(server.door_port, api_key=admin_key, https=False)
        anon = _client(server.door_port)
        try:
            text = door.docs[0]["heading"]
            assert tenant.query_points(COLLECTION, query=generative(text), limit=3).points[0].id == door.docs[0]["id"]
            assert all(_org(door, p.id) == "acme" for p in tenant.query_points(COLLECTION, query=door.docs[N_ACME]["vector"],
                                                                             limit=20).points)
            assert tenant.count(COLLECTION).count == N_ACME
            assert {p.payload["org"] for p in tenant.scroll(COLLECTION, limit=100)[0]} == {"acme"}
            assert tenant.retrieve(COLLECTION, [door.docs[N_ACME]["id"]]) == []
            assert admin.count(COLLECTION).count == N_ACME + N_GLOBEX
            refused = [
                lambda: tenant.query_points(COLLECTION, query=generative(text), limit=3,
                                            query_filter=models.Filter(must=[models.FieldCondition(
                                                key="org", match=models.MatchValue(value="globex"))])),
                lambda: tenant.upsert(COLLECTION, [models.PointStruct(id=5, vector=[0.1] * DIM,
                                                                     payload={"org": "globex", "body": "b"})]),
                lambda: tenant.set_payload(COLLECTION, {"org": "acme"}, points=[door.docs[N_ACME]["id"]]),
                lambda: tenant.delete_collection(COLLECTION),
                lambda: tenant.get_collections()]
            for call in refused:
                with pytest.raises(grpc.RpcError) as err:
                    call()
                assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED, err.value.details()
            with pytest.raises(grpc.RpcError) as err:
                anon.count(COLLECTION)
            assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
            tenant.delete(COLLECTION, points_selector=models.FilterSelector(filter=models.Filter()))  # own points only
            assert admin.count(COLLECTION).count == N_GLOBEX
        finally:
            for c in (tenant, admin, anon):
                c.close()
            _refill(door)


def _refill(door: Door) -> None:
    """Put the acme documents back through the door (their docids come back from the namespace's state)."""
    door.qdrant.upsert(COLLECTION, points=[models.PointStruct(id=d["id"], vector=d["vector"],
                                                              payload={k: d[k] for k in USER_KEYS})
                                           for d in door.docs if d["org"] == "acme"])


# --- writes through the door -----------------------------------------------------------------------------
def test_attached_collection_holds_only_the_docid_key_of_genrets_own(door: Door) -> None:
    """Besides the docid, genret adds only the hash of the title and text it indexed (or a write through
    the door set), which read replicas compare."""
    records, _ = door.qdrant.scroll(COLLECTION, limit=100)
    assert len(records) == N_ACME + N_GLOBEX
    assert all(set(r.payload or {}) == USER_KEYS | {DOCID_KEY, TEXT_HASH_KEY} for r in records)
    assert all(r.payload and r.payload[TEXT_HASH_KEY] == text_hash(r.payload["heading"], r.payload["body"])
               for r in records)


def test_writes_reach_qdrant_first_then_the_namespace(door: Door) -> None:
    new = {"id": 77, "org": "acme", "heading": "wing flutter of supersonic delta plates",
           "body": "flutter boundaries of thin delta wings at supersonic speed", "year": 2001}
    door.qdrant.upsert(COLLECTION, points=[models.PointStruct(id=77, vector=[0.2] * DIM,
                                                              payload={k: new[k] for k in USER_KEYS})])
    got = door.qdrant.retrieve(COLLECTION, [77])[0]
    assert got.payload and got.payload.get(DOCID_KEY)
    pids = {int(p) for p, _ in door.engine.namespaces.entries("acme")}
    assert 77 in pids
    docid = got.payload[DOCID_KEY]
    door.qdrant.overwrite_payload(COLLECTION, {"org": "acme", "heading": new["heading"], "body": "rewritten",
                                               "year": 2001}, points=[77])
    assert door.qdrant.retrieve(COLLECTION, [77])[0].payload[DOCID_KEY] == docid  # its docid is kept
    with pytest.raises(grpc.RpcError) as err:  # a write Qdrant refuses changes nothing
        door.qdrant.upsert(COLLECTION, points=[models.PointStruct(id=78, vector=[0.2] * (DIM + 3),
                                                                  payload={"org": "acme", "body": "x"})])
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert 78 not in {int(p) for p, _ in door.engine.namespaces.entries("acme")}
    door.qdrant.delete(COLLECTION, points_selector=models.FilterSelector(filter=acme(models.FieldCondition(
        key="year", range=models.Range(gte=2000)))))
    assert 77 not in {int(p) for p, _ in door.engine.namespaces.entries("acme")}
    res = door.qdrant.query_points(COLLECTION, query=generative(new["heading"]), query_filter=acme(), limit=20)
    assert 77 not in {p.id for p in res.points}
    body = {"heading": "batched note on wing flutter", "body": "wing flutter in one batch", "year": 1990}
    door.qdrant.batch_update_points(COLLECTION, [  # an upsert, then a filter that selects what it wrote
        models.UpsertOperation(upsert=models.PointsList(points=[models.PointStruct(
            id=88, vector=[0.3] * DIM, payload={"org": "acme", **body})])),
        models.SetPayloadOperation(set_payload=models.SetPayload(payload={"org": "globex"}, filter=models.Filter(
            must=[models.FieldCondition(key="year", match=models.MatchValue(value=1990))])))])
    assert 88 not in {int(p) for p, _ in door.engine.namespaces.entries("acme")}
    assert 88 in {int(p) for p, _ in door.engine.namespaces.entries("globex")}
    door.qdrant.batch_update_points(COLLECTION, [models.DeleteOperation(delete=models.PointIdsList(points=[88]))])
    assert 88 not in {int(p) for p, _ in door.engine.namespaces.entries("globex")}
    door.qdrant.set_payload(COLLECTION, {"org": "globex"}, points=[door.docs[3]["id"]])  # moves tenant
    try:
        assert door.docs[3]["id"] not in {int(p) for p, _ in door.engine.namespaces.entries("acme")}
        assert door.docs[3]["id"] in {int(p) for p, _ in door.engine.namespaces.entries("globex")}
    finally:
        door.qdrant.set_payload(COLLECTION, {"org": "acme"}, points=[door.docs[3]["id"]])
    assert door.docs[3]["id"] in {int(p) for p, _ in door.engine.namespaces.entries("acme")}


def test_the_lexical_list_follows_writes_through_the_door_without_a_build(door: Door) -> None:
    """Qdrant-wire upserts, payload changes, a move to another tenant and deletes reach the tenant's held
    lexical index in place, leaving what a fresh build from Qdrant gives."""
    lexical, query = door.engine._lexical, "quixotic hyperboloid nozzle"
    lexical.prepare("acme")
    built = lexical._built["acme"]

    def found() -> list[str]:
        got, fresh = lexical.search("acme", query, 5), LexicalIndexes(door.engine.store).search("acme", query, 5)
        assert [p for p, _ in got] == [p for p, _ in fresh]
        np.testing.assert_allclose([s for _, s in got], [s for _, s in fresh], rtol=2e-6)
        return [p for p, _ in got]

    door.qdrant.upsert(COLLECTION, points=[models.PointStruct(id=91, vector=[0.1] * DIM, payload={
        "org": "acme", "heading": "nozzles", "body": "a quixotic hyperboloid nozzle", "year": 1999})])
    try:
        assert found()[:1] == ["91"]
        door.qdrant.set_payload(COLLECTION, {"body": "plain words"}, points=[91])
        assert found() == []
        payload = door.qdrant.retrieve(COLLECTION, [91])[0].payload or {}
        assert payload[TEXT_HASH_KEY] == text_hash("nozzles", "plain words")  # read replicas follow it
        door.qdrant.set_payload(COLLECTION, {"body": "hyperboloid"}, points=[91])
        assert found() == ["91"]
        door.qdrant.set_payload(COLLECTION, {"org": "globex"}, points=[91])  # moves to another tenant
        assert found() == []
        door.qdrant.set_payload(COLLECTION, {"org": "acme"}, points=[91])
        assert found() == ["91"]
    finally:
        door.qdrant.delete(COLLECTION, points_selector=models.PointIdsList(points=[91]))
    assert found() == []
    assert lexical._built["acme"] is built  # changed in place: not one build since the first


def test_genrets_own_upsert_takes_a_payload_and_the_callers_vectors(door: Door) -> None:
    from google.protobuf.struct_pb2 import Struct

    extra = Struct()
    extra.update({"year": 2020, "lang": "en"})
    vector = [0.5] * DIM
    doc = pb.Document(id="memo-1", title="boundary layer memo", text="transition on a flat plate",
                      payload=extra, vectors={"": pb.Vector(values=vector)})
    res = door.stub.UpsertDocuments(pb.UpsertRequest(tenant="acme", documents=[doc]))
    pid = res.documents[0].point_id
    got = door.qdrant.retrieve(COLLECTION, [pid], with_vectors=True)[0]
    assert got.payload is not None and got.payload["year"] == 2020 and got.payload["lang"] == "en"
    assert got.payload["org"] == "acme" and got.payload[DOCID_KEY] == res.documents[0].docid
    assert np.allclose(got.vector, np.asarray(vector) / np.linalg.norm(vector))  # cosine: stored normalised
    wrong = pb.Document(id="memo-2", title="t", text="x", vectors={"": pb.Vector(values=[0.5] * (DIM + 1))})
    with pytest.raises(grpc.RpcError) as err:
        door.stub.UpsertDocuments(pb.UpsertRequest(tenant="acme", documents=[wrong]))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert door.qdrant.count(COLLECTION, count_filter=models.Filter(must=[models.FieldCondition(
        key="doc_id", match=models.MatchValue(value="memo-2"))])).count == 0

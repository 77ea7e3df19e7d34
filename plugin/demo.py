"""`genret demo`: the whole path on the bundled Cranfield corpus with an embedded Qdrant.

Load the corpus into Qdrant (with MiniLM vectors), build the generative index (semantic docids,
MiniLM-encoder model, training on documents and the corpus's training queries for a fixed time budget),
start the sidecar on a free local port, run example queries over real gRPC, and ask one question three
ways through the Qdrant front door with unmodified qdrant-client: dense, generative, and both fused by RRF.
"""

from __future__ import annotations

import dataclasses
import time

from genret.config import Config
from genret.data.beir import Document, demo_corpus_path, load_qrels, load_queries
from genret.devices import resolve_device
from genret.store import VECTOR_NAME, QdrantStore

DEMO_COLLECTION = "cranfield"
DEMO_TENANT = "demo"
EXAMPLE_QUERIES = 4


SHORT_WORDS = 100  # the demo's filter: documents of at most this many words


def demo_fields(doc: Document) -> dict[str, int]:
    """The demo corpus's one filterable payload field: a document's length in words."""
    return {"words": len(doc.text.split())}


def run_demo(cfg: Config, minutes: float, fresh: bool) -> int:
    from genret.api.server import ServerThread
    from genret.client import GenretClient, format_hits
    from genret.data.index_dir import read_manifest
    from genret.data.loader import load_beir
    from genret.indexing.indexer import IndexOptions, TrainingQueries, build_index
    from genret.indexing.training import TrainConfig
    from genret.indexing.training_data import PairOptions
    from genret.serving.engine import Engine

    if cfg.collection == Config.collection:
        cfg = dataclasses.replace(cfg, collection=DEMO_COLLECTION)
    cfg = dataclasses.replace(cfg, port=0, qdrant_port=0)
    data = demo_corpus_path()
    device = resolve_device(cfg.device)
    t_all = time.perf_counter()
    store = QdrantStore(cfg)
    try:
        if fresh or not store.exists():
            if store.exists():
                store.drop_collection()
            t0 = time.perf_counter()
            n = load_beir(store, data, DEMO_TENANT, with_vectors=True, device=device, derive=demo_fields)
            print(f"[1/5] loaded {n} Cranfield documents into Qdrant '{cfg.collection}' "
                  f"({time.perf_counter() - t0:.0f}s)", flush=True)
        else:
            print(f"[1/5] Qdrant collection '{cfg.collection}' already loaded", flush=True)

        queries, train_qrels = load_queries(data), load_qrels(data, "train")
        try:
            read_manifest(cfg.index_dir)
            have_index = not fresh
        except (FileNotFoundError, ValueError):
            have_index = False
        if have_index:
            print(f"[2/5] index already built in {cfg.index_dir} (use --fresh to rebuild)", flush=True)
        else:
            t0 = time.perf_counter()
            opts = IndexOptions(pairs=PairOptions(max_chunks=3),
                                train=TrainConfig(epochs=8, max_minutes=minutes, freeze_encoder=True))
            m = build_index(store, cfg.index_dir, opts, device, TrainingQueries(queries, train_qrels))
            assert m is not None  # one process builds it
            st = m.training["stats"]
            print(f"[2/5] index built in {time.perf_counter() - t0:.0f}s: {sum(m.tenants.values())} semantic "
                  f"docids, {st['steps']} steps ({st['epochs_done']:.1f} epochs), loss {st['final_loss']:.3f}",
                  flush=True)

        engine = Engine.load(cfg, store)
        with ServerThread(cfg, engine, store.upstream()) as server:
            print(f"[3/5] sidecar serving on {server.target} (gRPC, health SERVING), Qdrant front door on "
                  f"{cfg.host}:{server.door_port}", flush=True)
            print("[4/5] example queries over gRPC (Cranfield training queries; * marks a judged-relevant doc)")
            with GenretClient(server.target) as client:
                for qid in list(train_qrels)[:EXAMPLE_QUERIES]:
                    resp = client.search(DEMO_TENANT, queries[qid], top_k=5)
                    relevant = set(train_qrels[qid])
                    print(f"\nquery {qid}: {queries[qid]}")
                    shown = ", ".join(sorted(relevant, key=int)[:8]) + (", ..." if len(relevant) > 8 else "")
                    print(f"  judged relevant ({len(relevant)}): {shown}")
                    lines = format_hits(resp).splitlines()
                    for line, hit in zip(lines, resp.hits, strict=False):
                        doc = hit.payload.fields["doc_id"].string_value
                        print(("*" if doc in relevant else " ") + line[1:])
                dense = client.search(DEMO_TENANT, queries[list(train_qrels)[0]], top_k=3, mode="dense")
                print("\nsame first query, DENSE mode (Qdrant MiniLM search):")
                print(format_hits(dense))
            first = list(train_qrels)[0]
            vector = [float(x) for x in engine.embed_queries([queries[first]])[0]]
            ask_three_ways(cfg, server.door_port, queries[first], vector, set(train_qrels[first]))
    finally:
        store.close()
    print(f"\ndemo finished in {time.perf_counter() - t_all:.0f}s")
    return 0


def ask_three_ways(cfg: Config, port: int, question: str, vector: list[float], relevant: set[str]) -> None:
    """One question through the front door, as a Qdrant user's own code asks it (unmodified qdrant-client):
    dense with the user's vector, generative with ``Document(model="genret")``, and both fused by RRF."""
    from qdrant_client import QdrantClient, models

    tenant = models.Filter(must=[models.FieldCondition(key=cfg.tenant_key, match=models.MatchValue(value=DEMO_TENANT))])
    generative = models.Document(text=question, model="genret")
    print(f"\n[5/5] the same question through the Qdrant front door ({cfg.host}:{port}), unmodified qdrant-client:")
    print(f"  {question}")
    client = QdrantClient(host=cfg.host, grpc_port=port, prefer_grpc=True, cloud_inference=True,
                          check_compatibility=False)
    try:
        asks = {
            "dense": dict(query=vector, using=VECTOR_NAME),
            "generative": dict(query=generative),
            "fused (RRF)": dict(prefetch=[models.Prefetch(query=generative, limit=10),
                                          models.Prefetch(query=vector, using=VECTOR_NAME, limit=10)],
                                query=models.FusionQuery(fusion=models.Fusion.RRF)),
            f"generative, only documents of at most {SHORT_WORDS} words (filtered inside decoding)": dict(
                query=generative, query_filter=models.Filter(must=[*(tenant.must or []), models.FieldCondition(
                    key="words", range=models.Range(lte=SHORT_WORDS))])),
        }
        found: dict[str, set[object]] = {}
        for name, ask in asks.items():
            ask.setdefault("query_filter", tenant)
            points = client.query_points(cfg.collection, limit=10, with_payload=["doc_id", "words"],
                                         **ask).points  # type: ignore[arg-type]
            found[name] = {p.id for p in points}
            print(f"  {name}:")
            for rank, p in enumerate(points[:5], 1):
                doc = str((p.payload or {}).get("doc_id", p.id))
                by = "+".join(k for k in ("generative", "dense") if p.id in found[k]) if name.startswith("fused") else ""
                note = f"  found by {by}" if by else ""
                words = (p.payload or {}).get("words")
                print(f"   {'*' if doc in relevant else ' '}{rank}. doc {doc:>5}  score {p.score:8.4f}"
                      f"{f'  {words} words' if words is not None else ''}{note}")
    finally:
        client.close()

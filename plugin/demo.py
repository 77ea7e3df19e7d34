"""`genret demo`: the whole path on the bundled Cranfield corpus with an embedded Qdrant.

Load the corpus into Qdrant (with MiniLM vectors), build the generative index (semantic docids,
MiniLM-encoder model, training on documents and the corpus's training queries for a fixed time budget),
start the sidecar on a free local port, and run example queries over real gRPC.
"""

from __future__ import annotations

import dataclasses
import time

from genret.config import Config
from genret.data.beir import demo_corpus_path, load_qrels, load_queries
from genret.devices import resolve_device
from genret.store import QdrantStore

DEMO_COLLECTION = "cranfield"
DEMO_TENANT = "demo"
EXAMPLE_QUERIES = 4


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
    cfg = dataclasses.replace(cfg, port=0)
    data = demo_corpus_path()
    device = resolve_device(cfg.device)
    t_all = time.perf_counter()
    store = QdrantStore(cfg)
    try:
        if fresh or not store.exists():
            if store.exists():
                store.drop_collection()
            t0 = time.perf_counter()
            n = load_beir(store, data, DEMO_TENANT, with_vectors=True, device=device)
            print(f"[1/4] loaded {n} Cranfield documents into Qdrant '{cfg.collection}' "
                  f"({time.perf_counter() - t0:.0f}s)", flush=True)
        else:
            print(f"[1/4] Qdrant collection '{cfg.collection}' already loaded", flush=True)

        queries, train_qrels = load_queries(data), load_qrels(data, "train")
        try:
            read_manifest(cfg.index_dir)
            have_index = not fresh
        except (FileNotFoundError, ValueError):
            have_index = False
        if have_index:
            print(f"[2/4] index already built in {cfg.index_dir} (use --fresh to rebuild)", flush=True)
        else:
            t0 = time.perf_counter()
            opts = IndexOptions(pairs=PairOptions(max_chunks=3),
                                train=TrainConfig(epochs=8, max_minutes=minutes, freeze_encoder=True))
            m = build_index(store, cfg.index_dir, opts, device, TrainingQueries(queries, train_qrels))
            st = m.training["stats"]
            print(f"[2/4] index built in {time.perf_counter() - t0:.0f}s: {sum(m.tenants.values())} semantic "
                  f"docids, {st['steps']} steps ({st['epochs_done']:.1f} epochs), loss {st['final_loss']:.3f}",
                  flush=True)

        engine = Engine.load(cfg, store)
        with ServerThread(cfg, engine) as server:
            print(f"[3/4] sidecar serving on {server.target} (gRPC, health SERVING)", flush=True)
            print("[4/4] example queries over gRPC (Cranfield training queries; * marks a judged-relevant doc)")
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
    finally:
        store.close()
    print(f"\ndemo finished in {time.perf_counter() - t_all:.0f}s")
    return 0

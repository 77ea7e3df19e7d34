"""How well documents upserted after indexing are found before any retraining.

    python integration/bench/bench_new_docs.py --data ../shared/data/cranfield [--holdout 10] [--epochs 8] \
        [--scheme atomic --docid-init embeddings --freeze-docid-embeddings]

Every ``--holdout``-th document of the corpus is held out; the rest is loaded and indexed (frozen
MiniLM encoder, real training queries of the held-out documents dropped with them). The held-out
documents are then upserted through the sidecar's write path, which places each next to its nearest
neighbours in the semantic docid tree (embedding-seeded atomic docids: gives each a spare token whose
row is its vector). On the test split, Hits@10 is computed separately over each
query's held-out relevant documents and over its indexed relevant documents (each over the queries that
have at least one such document), for the generative retriever and, as a reference, Qdrant dense search.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from common import collection_args, docid_args, environment, print_table, write_json

from genret.config import Config, force_offline
from genret.data.beir import load_corpus, load_qrels, load_queries
from genret.data.embed import EMBED_DIM, TextEncoder
from genret.devices import resolve_device
from genret.indexing.indexer import IndexOptions, TrainingQueries, build_index
from genret.indexing.training import TrainConfig
from genret.indexing.training_data import PairOptions
from genret.serving.engine import Engine
from genret.store import QdrantStore
from genret.types import Mode, NewDocument, SearchQuery

TENANT = "t"


def hits_at_10(runs: Mapping[str, list[str]], qrels: Mapping[str, Mapping[str, int]], docs: set[str]) -> tuple[float, int]:
    """Share of queries (having a relevant document in ``docs``) with one of those in their top 10."""
    scored = [q for q, rel in qrels.items() if q in runs and any(d in docs and g > 0 for d, g in rel.items())]
    hit = sum(any(d in docs and qrels[q].get(d, 0) > 0 for d in runs[q][:10]) for q in scored)
    return (hit / len(scored) if scored else float("nan")), len(scored)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    collection_args(p)
    p.add_argument("--holdout", type=int, default=10, help="hold out every n-th document")
    p.add_argument("--epochs", type=float, default=8)
    p.add_argument("--max-minutes", type=float, default=10)
    docid_args(p)
    p.add_argument("--out", default="integration/bench/results/cranfield/new-docs/new-docs-cranfield.json")
    args = p.parse_args()
    force_offline()
    device = resolve_device("auto")
    tmp = Path(tempfile.mkdtemp(prefix="genret-newdocs-"))
    cfg = Config(qdrant_path=str(tmp / "q"), collection="newdocs", index_dir=str(tmp / "idx"), device=str(device),
                 tenant_max_new_docids=0)  # one tenant, every held-out document upserted: no quota
    corpus = load_corpus(args.data)
    held = [d for i, d in enumerate(corpus) if i % args.holdout == args.holdout - 1]
    kept = [d for i, d in enumerate(corpus) if i % args.holdout != args.holdout - 1]
    held_ids, kept_ids = {d.doc_id for d in held}, {d.doc_id for d in kept}

    store = QdrantStore(cfg)
    store.ensure_collection(EMBED_DIM)
    vectors = TextEncoder(device=device).encode([f"{d.title}. {d.text}" for d in kept], progress=True)
    store.upsert_documents(TENANT, [(d.doc_id, d.title, d.text) for d in kept], vectors)
    train_q = load_queries(args.data)
    train_rel = {q: {d: g for d, g in rel.items() if d in kept_ids}
                 for q, rel in load_qrels(args.data, "train").items()}
    tq = TrainingQueries(train_q, {q: r for q, r in train_rel.items() if r})
    train = TrainConfig(epochs=args.epochs, max_minutes=args.max_minutes, freeze_encoder=True,
                        freeze_docid_embeddings=args.freeze_docid_embeddings)
    opts = IndexOptions(scheme=args.scheme, docid_init=args.docid_init, spare_docids=len(held),
                        pairs=PairOptions(max_chunks=3), train=train)
    t0 = time.perf_counter()
    build_index(store, cfg.index_dir, opts, device, tq)
    index_s = time.perf_counter() - t0

    engine = Engine.load(cfg, store)
    t0 = time.perf_counter()
    for s in range(0, len(held), 64):
        engine.upsert(TENANT, [NewDocument(d.doc_id, d.title, d.text) for d in held[s : s + 64]])
    upsert_s = time.perf_counter() - t0

    queries = load_queries(args.data)
    qrels = load_qrels(args.data, args.split)
    qids = [q for q in qrels if q in queries]
    doc_of = {pid: doc_id for doc_id, pid in ((d.doc_id, d.point_id) for d in store.scroll_tenant(TENANT))}
    result: dict[str, Any] = {"held_out_docs": len(held), "indexed_docs": len(kept), "index_s": index_s,
                              "upsert_s": upsert_s}
    rows = []
    for mode in (Mode.GENERATIVE, Mode.DENSE):
        runs: dict[str, list[str]] = {}
        for s in range(0, len(qids), 16):
            chunk = qids[s : s + 16]
            batch = [SearchQuery(TENANT, queries[q], 10, 100, mode) for q in chunk]
            for q, hits in zip(chunk, engine.search(batch), strict=True):
                runs[q] = [doc_of[h.point_id] for h in hits]
        new, n_new = hits_at_10(runs, qrels, held_ids)
        old, n_old = hits_at_10(runs, qrels, kept_ids)
        rows.append({"retriever": mode.value, "Hits@10 upserted docs": new, "queries (upserted)": n_new,
                     "Hits@10 indexed docs": old, "queries (indexed)": n_old})
    store.close()
    table = print_table(rows, list(rows[0]))
    write_json(args.out, {"benchmark": "new_documents", "environment": environment(device), "data": args.data,
                          "split": args.split, "settings": vars(args), "result": result, "rows": rows,
                          "table": table})


if __name__ == "__main__":
    main()

"""Forgetting under continual indexing: full retraining vs naive fine-tuning vs replay (DSI++).

    python integration/bench/bench_forgetting.py --data ../shared/data/cranfield \
        [--increments 5] [--first 0.6] [--epochs 3] [--add-epochs 3] [--replay 1.0] [--sam-rho 0] \
        [--generated-queries 3] [--query-cache FILE] [--methods full,naive,continual] \
        [--scheme atomic --docid-init embeddings --freeze-docid-embeddings]

The corpus is shuffled (seeded) and cut into increments: the first holds ``--first`` of it, the rest
share what is left. All methods train the first increment the same way (one shared build), then, for
each later increment:

- full: a new index trained from scratch on every document so far;
- naive: ``genret index --add`` without replay (fine-tune on the new documents only);
- continual: ``genret index --add --replay R`` (new documents plus R replayed pseudo-query pairs of old
  documents per new pair, from the index's replay memory), optionally with SAM.

After each increment, Hits@10 of the generative retriever on the test queries, over each query's
relevant documents of the first increment and of the newest one (each over the queries that have one),
and the optimizer steps each method used. Every method runs on its own embedded Qdrant collection.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np
from common import collection_args, docid_args, environment, print_table, write_json

from genret.config import Config, force_offline
from genret.data.beir import Document, load_corpus, load_qrels, load_queries
from genret.data.embed import EMBED_DIM, TextEncoder
from genret.devices import resolve_device
from genret.indexing.indexer import AddOptions, IndexOptions, TrainingQueries, add_documents, build_index
from genret.indexing.training import TrainConfig
from genret.indexing.training_data import PairOptions
from genret.serving.engine import Engine
from genret.store import QdrantStore
from genret.types import Mode, SearchQuery

sys.path.insert(0, str(Path(__file__).parent))
from bench_new_docs import hits_at_10  # noqa: E402

TENANT = "t"
METHODS = ("full", "naive", "continual")


def increments(docs: Sequence[Document], count: int, first: float, seed: int) -> list[list[Document]]:
    order = list(docs)
    random.Random(seed).shuffle(order)
    head = round(first * len(order))
    rest = np.array_split(np.arange(head, len(order)), count - 1)
    return [order[:head], *[[order[i] for i in part] for part in rest]]


def generative_top10(cfg: Config, store: QdrantStore, queries: Mapping[str, str], beams: int) -> dict[str, list[str]]:
    engine = Engine.load(cfg, store)
    doc_of = {d.point_id: d.doc_id for d in store.scroll_tenant(TENANT)}
    qids = list(queries)
    runs: dict[str, list[str]] = {}
    for s in range(0, len(qids), 16):
        chunk = qids[s : s + 16]
        batch = [SearchQuery(TENANT, queries[q], 10, beams, Mode.GENERATIVE) for q in chunk]
        for q, hits in zip(chunk, engine.search(batch), strict=True):
            runs[q] = [doc_of[h.point_id] for h in hits]
    return runs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    collection_args(p)
    p.add_argument("--increments", type=int, default=5)
    p.add_argument("--first", type=float, default=0.6, help="share of the corpus in the first increment")
    p.add_argument("--epochs", type=float, default=3.0)
    p.add_argument("--add-epochs", type=float, default=None, help="epochs of each --add (default: --epochs)")
    p.add_argument("--methods", default=",".join(METHODS), help="which of full, naive, continual to run")
    p.add_argument("--replay", type=float, default=1.0)
    p.add_argument("--sam-rho", type=float, default=0.0)
    p.add_argument("--max-chunks", type=int, default=1)
    p.add_argument("--rehearsal", type=int, default=1)
    p.add_argument("--generated-queries", type=int, default=3)
    p.add_argument("--query-cache", default=None, help="generated-query cache shared by every build")
    docid_args(p)
    p.add_argument("--beam-size", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=None, help="only the first n documents (smoke runs)")
    p.add_argument("--out", default="integration/bench/results/cranfield/forgetting/forgetting-cranfield.json")
    args = p.parse_args()
    force_offline()
    device = resolve_device("auto")
    tmp = Path(tempfile.mkdtemp(prefix="genret-forget-"))
    cache = args.query_cache or str(tmp / "queries.jsonl")
    corpus = load_corpus(args.data)[: args.limit]
    parts = increments(corpus, args.increments, args.first, args.seed)
    vectors = dict(zip([d.doc_id for d in corpus], TextEncoder(device=device).encode(
        [f"{d.title}. {d.text}" for d in corpus], progress=True), strict=True))
    queries = load_queries(args.data)
    qrels = load_qrels(args.data, args.split)
    test_q = {q: queries[q] for q in qrels if q in queries}
    train_q = TrainingQueries(queries, load_qrels(args.data, "train"))
    pairs = PairOptions(max_chunks=args.max_chunks, rehearsal=args.rehearsal,
                        generated_queries=args.generated_queries)
    train = TrainConfig(epochs=args.epochs, freeze_encoder=True, seed=args.seed,
                        freeze_docid_embeddings=args.freeze_docid_embeddings)
    index_options = IndexOptions(scheme=args.scheme, docid_init=args.docid_init, pairs=pairs, query_cache=cache,
                                 train=train)

    def config(method: str) -> Config:
        return Config(qdrant_path=str(tmp / method / "q"), collection="forget", index_dir=str(tmp / method / "idx"),
                      device=str(device))

    def load(store: QdrantStore, docs: Sequence[Document]) -> None:
        store.ensure_collection(EMBED_DIM)
        store.upsert_documents(TENANT, [(d.doc_id, d.title, d.text) for d in docs],
                               np.stack([vectors[d.doc_id] for d in docs]))

    rows: list[dict[str, Any]] = []
    first_ids = {d.doc_id for d in parts[0]}
    methods = [m for m in METHODS if m in args.methods.split(",")]
    add_epochs = args.epochs if args.add_epochs is None else args.add_epochs
    cumulative = dict.fromkeys(methods, 0)

    def measure(method: str, inc: int, store: QdrantStore, steps: int, seconds: float) -> None:
        runs = generative_top10(config(method), store, test_q, args.beam_size)
        first, n_first = hits_at_10(runs, qrels, first_ids)
        newest, n_new = hits_at_10(runs, qrels, {d.doc_id for d in parts[inc]})
        if inc > 0:
            cumulative[method] += steps
        rows.append({"increment": inc + 1, "method": method, "docs": sum(len(x) for x in parts[: inc + 1]),
                     "steps": steps, "steps since first": cumulative[method], "train s": round(seconds, 1),
                     "Hits@10 first": round(first, 3), "queries first": n_first,
                     "Hits@10 newest": round(newest, 3), "queries newest": n_new})
        print(rows[-1], flush=True)

    base = config("base")
    store = QdrantStore(base)
    load(store, parts[0])
    t0 = time.perf_counter()
    m = build_index(store, base.index_dir, index_options, device, train_q)
    base_s = time.perf_counter() - t0
    store.close()
    for method in methods:
        shutil.copytree(tmp / "base", tmp / method)
        with closing(QdrantStore(config(method))) as s:
            measure(method, 0, s, int(m.training["stats"]["steps"]), base_s)

    for inc in range(1, len(parts)):
        for method in methods:
            cfg = config(method)
            with closing(QdrantStore(cfg)) as s:
                load(s, parts[inc])
                t0 = time.perf_counter()
                if method == "full":
                    shutil.rmtree(cfg.index_dir)
                    built = build_index(s, cfg.index_dir, index_options, device, train_q)
                    steps = int(built.training["stats"]["steps"])
                else:
                    replay = args.replay if method == "continual" else 0.0
                    sam = args.sam_rho if method == "continual" else 0.0
                    added = add_documents(s, cfg.index_dir, AddOptions(
                        replay=replay, pairs=pairs, query_cache=cache,
                        train=TrainConfig(epochs=add_epochs, freeze_encoder=True, sam_rho=sam, seed=args.seed)),
                        device, train_q)
                    steps = int(added.training["additions"][-1]["stats"]["steps"])
                measure(method, inc, s, steps, time.perf_counter() - t0)

    after_first = {r["method"]: r["Hits@10 first"] for r in rows if r["increment"] == 1}
    final = {r["method"]: r for r in rows if r["increment"] == len(parts)}
    summary = [{"method": meth, "Hits@10 first, after it": after_first[meth],
                "Hits@10 first, at the end": final[meth]["Hits@10 first"],
                "kept": round(final[meth]["Hits@10 first"] / after_first[meth], 3) if after_first[meth] else None,
                "Hits@10 newest, at the end": final[meth]["Hits@10 newest"],
                "steps since first": final[meth]["steps since first"],
                "steps vs full": (round(final[meth]["steps since first"] / max(1, final["full"]["steps since first"]), 3)
                                  if "full" in final else None)}
               for meth in methods]
    table = print_table(rows, list(rows[0]))
    summary_table = print_table(summary, list(summary[0]))
    write_json(args.out, {"benchmark": "forgetting", "environment": environment(device), "data": args.data,
                          "split": args.split, "settings": vars(args),
                          "increment_sizes": [len(x) for x in parts], "rows": rows, "summary": summary,
                          "table": table, "summary_table": summary_table})
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

"""How far MiniLM's own geometry reaches on a collection: each document as one vector (what the dense
list and an embedding-seeded docid row start from) or as one row per run of ``--sentences`` consecutive
sentences (title + sentences, a document scored by its best row), alone and mixed, on judged queries.

    python integration/bench/bench_rows.py --qdrant-path Q --collection scifact --tenant sf \
        --data ../shared/data/scifact --split dev --build sf5=IDX-sf5 \
        --out integration/bench/results/scifact/rows/rows-dev-cpu.json

The same rows are also read by a trained atomic index's first-step decoder features (``--build
NAME=INDEX_DIR``, docids in ``genret_docid_NAME``), alone and added to its docid logits. The mixing weights are
chosen on the very queries they are scored on, so each mixed row is an upper bound for that mix. Dense
(Qdrant) and BM25 over the same queries are the baselines of the same run; ``bar`` is the best of them
+ 0.02.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from common import environment, print_table, write_json
from judged import baseline_rows, build_arg, build_config, build_parser, judged_queries, served_runs

from genret.data.embed import TextEncoder
from genret.evaluation.evaluate import Run, score_run
from genret.indexing.pairs import passage, sentences
from genret.serving.engine import Engine
from genret.store import QdrantStore, StoredDoc

WEIGHTS = (0.25, 0.5, 1.0, 2.0)  # weight of the second score, each score scaled by its spread first
DEPTH = 100


def sentence_rows(docs: Sequence[StoredDoc], per_row: int = 1) -> tuple[list[str], np.ndarray]:
    """One text per run of ``per_row`` consecutive sentences of each document (title + sentences; the
    whole passage where none is long enough) and, per text, its document's position; documents in order,
    so rows of one are adjacent."""
    texts: list[str] = []
    owner: list[int] = []
    for i, d in enumerate(docs):
        sents = sentences(d.text) or [d.text]
        runs = [" ".join(sents[s : s + per_row]) for s in range(max(1, len(sents) - per_row + 1))]
        texts += [passage(d.title, r) for r in runs]
        owner += [i] * len(runs)
    return texts, np.asarray(owner)


def best_row(scores: np.ndarray, owner: np.ndarray) -> np.ndarray:
    """(queries, documents): each document's best score over its rows (``owner`` sorted)."""
    starts = np.r_[0, np.flatnonzero(np.diff(owner)) + 1]
    return np.maximum.reduceat(scores, starts, axis=1)


def to_run(scores: np.ndarray, qids: Sequence[str], keys: Sequence[str]) -> Run:
    """The top ``DEPTH`` documents of each query."""
    top = np.argsort(-scores, axis=1)[:, :DEPTH]
    return {q: {keys[j]: float(scores[r, j]) for j in top[r]} for r, q in enumerate(qids)}


def mixes(name: str, first: np.ndarray, second: np.ndarray,
          ndcg: Callable[[np.ndarray], float]) -> list[dict[str, object]]:
    """``first + w * second`` over ``WEIGHTS``, each scaled by its standard deviation."""
    a, b = first / first.std(), second / second.std()
    return [{"retriever": name, "weight": w, "nDCG@10": ndcg(a + w * b)} for w in WEIGHTS]


def first_step(engine: Engine, texts: Sequence[str]) -> np.ndarray:
    """(queries, hidden) decoder output features at the first docid step."""
    out = []
    for s in range(0, len(texts), 32):
        state = engine.backend.start(engine.backend.encode(texts[s : s + 32]), 1)
        out.append(engine.backend.step(state, None).float().cpu().numpy())
    return np.concatenate(out)


def main() -> None:
    p = build_parser(__doc__, "a trained atomic index")
    p.add_argument("--sentences", type=int, default=1, help="consecutive sentences per row")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    if args.sentences < 1:
        p.error("--sentences must be at least 1")
    name, index_dir = build_arg(p, args.build)
    cfg = build_config(args, name, index_dir)
    qrels, fitted = judged_queries(args.data, args.split, cfg.max_query_chars)
    store = QdrantStore(cfg)
    try:
        engine = Engine.load(cfg, store)
        if engine.codec.name != "atomic":
            raise SystemExit(f"{index_dir} has {engine.codec.name} docids: the first step ranks documents only "
                             "with atomic ones")
        docs = list(store.scroll_tenant(args.tenant, with_vectors=True))
        if any(d.vector is None or d.docid is None for d in docs):
            raise SystemExit(f"tenant {args.tenant} has points without a vector or without a docid of {index_dir}")
        keys = [d.doc_id for d in docs]
        qids = list(fitted)
        runs = served_runs(engine, args.tenant, docs, fitted, name, DEPTH)
        encoder = TextEncoder()
        queries = encoder.encode([fitted[q] for q in qids])
        whole = np.stack([np.asarray(d.vector) for d in docs])
        texts, owner = sentence_rows(docs, args.sentences)
        rows_v = encoder.encode(texts, progress=True)
        tokens = [engine.codec.encode(str(d.docid))[0] for d in docs]
        features = first_step(engine, [fitted[q] for q in qids])
    finally:
        store.close()

    def ndcg(scores: np.ndarray) -> float:
        return round(score_run(qrels, to_run(scores, qids, keys))["nDCG@10"], 3)

    table = baseline_rows(qrels, runs, "retriever")
    by_doc, by_row = queries @ whole.T, best_row(queries @ rows_v.T, owner)
    logits = engine.backend.head.logits(torch.as_tensor(features)).numpy()[:, tokens]
    trained = best_row(features @ rows_v.T, owner)
    table += [
        {"retriever": "MiniLM query, document vectors", "weight": "", "nDCG@10": ndcg(by_doc)},
        {"retriever": "MiniLM query, best sentence row", "weight": "", "nDCG@10": ndcg(by_row)},
        *mixes("MiniLM query, document vectors + best sentence row", by_doc, by_row, ndcg),
        {"retriever": f"{name} docid logits", "weight": "", "nDCG@10": ndcg(logits)},
        {"retriever": f"{name} features, best sentence row", "weight": "", "nDCG@10": ndcg(trained)},
        *mixes(f"{name} docid logits + its features' best sentence row", logits, trained, ndcg),
        *mixes(f"{name} docid logits + MiniLM query's best sentence row", logits, by_row, ndcg)]
    print_table(table, ["retriever", "weight", "nDCG@10"])
    write_json(args.out, {"data": args.data, "split": args.split, "queries": len(qids), "documents": len(docs),
                          "sentences_per_row": args.sentences, "sentence_rows": len(texts),
                          "build": args.build, "rows": table,
                          "environment": environment(torch.device("cpu"))})


if __name__ == "__main__":
    main()

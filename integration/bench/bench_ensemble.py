"""How much of the seed-to-seed spread of generative retrieval is variance: several builds of one recipe
(differing only in `--seed`) scored alone and as ensembles, on judged queries none of them trained on
(several ``--split`` are pooled: an index built without judged queries was trained on none of them).

    python integration/bench/bench_ensemble.py --qdrant-path Q --collection cran --tenant cran \
        --data ../shared/data/cranfield --split test \
        --build base=IDX-base --build base-seed1=IDX-base-seed1 --build base-seed2=IDX-base-seed2 \
        --out integration/bench/results/cranfield/no-queries/ensemble-cpu.json

Each build is served as `genret eval` serves it (its docids read from the payload field
`genret_docid_NAME`), and its generative run is taken at beam 100. An ensemble ranks each document by the
sum of its probabilities under the builds (a document a build did not return counts 0 there). Dense
(Qdrant, MiniLM) and BM25 over the same queries are the baselines of the same run.
"""

from __future__ import annotations

import argparse
import itertools
import math
import statistics

import torch
from common import environment, print_table, tenant_args, write_json
from judged import build_arg, build_config

from genret.data.beir import load_qrels, load_queries
from genret.evaluation.evaluate import Run, bm25_run, engine_run, fit_queries, score_run
from genret.serving.engine import Engine
from genret.store import QdrantStore
from genret.types import Mode


def _runs(args: argparse.Namespace, builds: dict[str, str], queries: dict[str, str]) -> dict[str, Run]:
    """Each build's generative run, and dense's and BM25's (from the first build's engine and documents)."""
    runs: dict[str, Run] = {}
    for name, index_dir in builds.items():
        cfg = build_config(args, name, index_dir)
        store = QdrantStore(cfg)
        try:
            engine = Engine.load(cfg, store)
            docs = list(store.scroll_tenant(args.tenant))
            key_of = {d.point_id: d.doc_id for d in docs}
            fitted = fit_queries(queries, engine.config.max_query_chars)
            runs[name] = engine_run(engine, args.tenant, fitted, Mode.GENERATIVE, args.beams, args.beams, key_of, 16)
            if "dense" not in runs:
                runs["dense"] = engine_run(engine, args.tenant, fitted, Mode.DENSE, 100, 100, key_of, 16)
                runs["bm25"] = bm25_run([d.doc_id for d in docs], [f"{d.title} {d.text}" for d in docs], fitted, 100)
        finally:
            store.close()
    return runs


def ensemble(runs: list[Run]) -> Run:
    """Each query's documents ranked by their summed probability (scores are log-probabilities)."""
    out: Run = {}
    for q in dict.fromkeys(q for run in runs for q in run):
        summed: dict[str, float] = {}
        for run in runs:
            for doc, score in run.get(q, {}).items():
                summed[doc] = summed.get(doc, 0.0) + math.exp(score)
        out[q] = summed
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    tenant_args(p)
    p.add_argument("--data", required=True, help="BEIR folder")
    p.add_argument("--split", action="append", help="qrels split (repeat to pool several; default: test)")
    p.add_argument("--build", action="append", required=True, help="NAME=INDEX_DIR (docids in genret_docid_NAME)")
    p.add_argument("--beams", type=int, default=100)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    builds = dict(build_arg(p, b) for b in args.build)
    if len(builds) < 2:
        p.error("give at least two --build")
    args.split = args.split or ["test"]
    qrels = {q: judged for split in args.split for q, judged in load_qrels(args.data, split).items()}
    every = load_queries(args.data)
    queries = {q: every[q] for q in qrels if q in every}
    runs = _runs(args, builds, queries)
    ndcg = lambda run: round(score_run(qrels, run)["nDCG@10"], 3)  # noqa: E731
    rows = [{"retriever": "dense (Qdrant, MiniLM)", "builds": 0, "nDCG@10": ndcg(runs["dense"])},
            {"retriever": "BM25", "builds": 0, "nDCG@10": ndcg(runs["bm25"])}]
    singles = {name: ndcg(runs[name]) for name in builds}
    rows += [{"retriever": f"generative {name}", "builds": 1, "nDCG@10": v} for name, v in singles.items()]
    rows.append({"retriever": "generative, mean of single builds", "builds": 1,
                 "nDCG@10": round(statistics.mean(singles.values()), 3)})
    for k in range(2, len(builds) + 1):
        for combo in itertools.combinations(builds, k):
            rows.append({"retriever": "ensemble " + " + ".join(combo), "builds": k,
                         "nDCG@10": ndcg(ensemble([runs[n] for n in combo]))})
    print_table(rows, ["retriever", "builds", "nDCG@10"])
    write_json(args.out, {"data": args.data, "split": args.split, "queries": len(queries), "beams": args.beams,
                          "builds": builds, "rows": rows, "environment": environment(torch.device("cpu"))})


if __name__ == "__main__":
    main()

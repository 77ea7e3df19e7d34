"""Filters inside decoding against a post-filtered beam and Qdrant's filtered dense search, on real queries.

    python integration/bench/bench_filters.py --qdrant-path genret-data/qdrant --index-dir genret-data/index \
        --collection cranfield --tenant demo --data ../shared/data/cranfield --split test \
        [--beam 20] [--out integration/bench/results/cranfield/filters/filters-cpu.json]

A synthetic payload field ``bucket`` (a stable hash of the document id, 0..999) is written to every point;
filters ``bucket < 500, 100, 10, 1`` keep 50%, 10%, 1% and 0.1% of the documents. For each, over the
split's judged queries that have a relevant document passing the filter (qrels restricted to it):

* (a) generative search with the filter inside decoding (beam ``--beam``, top 10);
* (b) the unfiltered beam of the same width, post-filtered, top 10;
* (c) dense search (Qdrant, MiniLM) with the filter.

Quality (Hits@10, nDCG@10) is set against the unfiltered generative search on the full qrels. Latency of
(a), one query per call, against the unfiltered search, each query run both ways one after the other; the
first query under a filter pays for resolving it in Qdrant and building its trie (reported apart), later
ones reuse it.

``--synthetic 100000,1000000`` also times restricting the trie of one tenant of that many synthetic
semantic docids (6 base-10 digits) at each selectivity (``genret.serving.filtered.restrict``: rebuilt over
the matching docids, recounted, and the automatic choice), against building the whole tenant's trie
(``build_namespace`` + ``served_trie``): what the first query under a new filter pays on top of Qdrant's
resolution.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import environment, percentile, print_table, write_json

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

CUTS = {"50%": 500, "10%": 100, "1%": 10, "0.1%": 1}
TOP = 10


def bucket(doc_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(doc_id.encode(), digest_size=8).digest(), "little") % 1000


def restriction_costs(sizes: list[int]) -> list[dict[str, Any]]:
    from common import synthetic_docids

    from genret.serving.filtered import restrict
    from genret.serving.namespaces import build_namespace
    from genret.serving.served import served_trie

    rows = []
    for n in sizes:
        toks = synthetic_docids(n, 6, 10, seed=0)
        docids = ["-".join(str(t - 2) for t in row[:6]) for row in toks.tolist()]
        pids = [f"p{i}" for i in range(n)]
        t0 = time.perf_counter()
        ns = build_namespace("t", pids, docids, toks)
        assert ns is not None
        served_trie(ns, torch.device("cpu"), atomic=False)
        whole = time.perf_counter() - t0
        rng = np.random.default_rng(0)
        for name, cut in CUTS.items():
            match = {pids[i] for i in np.flatnonzero(rng.random(n) < cut / 1000).tolist()}
            row: dict[str, Any] = {"docids": n, "filter": name, "matching": len(match)}
            for how in ("rebuild", "count", "auto"):
                t0 = time.perf_counter()
                restrict(ns, match, torch.device("cpu"), atomic=False, how=how)
                row[f"{how}_ms"] = (time.perf_counter() - t0) * 1e3
            rows.append(row | {"whole_trie_ms": whole * 1e3})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--qdrant-path", required=True)
    p.add_argument("--index-dir", required=True)
    p.add_argument("--collection", default="cranfield")
    p.add_argument("--tenant", default="demo")
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--beam", type=int, default=20)
    p.add_argument("--synthetic", default="100000,1000000", help="tenant sizes for the restriction cost ('' skips)")
    p.add_argument("--out", default="integration/bench/results/cranfield/filters/filters-cpu.json")
    args = p.parse_args()

    from qdrant_client import models

    from genret.config import Config, force_offline
    from genret.data.beir import load_qrels, load_queries
    from genret.evaluation.evaluate import score_run
    from genret.serving.engine import Engine
    from genret.store import QdrantStore
    from genret.types import Mode, SearchQuery

    force_offline()
    cfg = Config(qdrant_path=args.qdrant_path, index_dir=args.index_dir, collection=args.collection, device="cpu")
    store = QdrantStore(cfg)
    records, _ = store.client.scroll(args.collection, scroll_filter=store.tenant_filter(args.tenant), limit=1_000_000,
                                     with_payload=["doc_id"])
    doc_of = {str(r.id): str((r.payload or {})["doc_id"]) for r in records}
    store.client.batch_update_points(args.collection, [
        models.SetPayloadOperation(set_payload=models.SetPayload(payload={"bucket": bucket(d)}, points=[r.id]))
        for r, d in ((r, doc_of[str(r.id)]) for r in records)])
    engine = Engine.load(cfg, store)
    queries, qrels = load_queries(args.data), load_qrels(args.data, args.split)
    qids = [q for q in qrels if q in queries]

    def run(mode: Mode, k: int, flt: dict[str, Any] | None) -> tuple[dict[str, dict[str, float]], list[float]]:
        out: dict[str, dict[str, float]] = {}
        times = []
        for q in qids:
            t0 = time.perf_counter()
            hits = engine.search([SearchQuery(args.tenant, queries[q], k, args.beam if mode != Mode.DENSE else 0,
                                              mode, filter=flt)])[0]
            times.append(time.perf_counter() - t0)
            out[q] = {doc_of[h.point_id]: h.score for h in hits}
        return out, times

    engine.search([SearchQuery(args.tenant, queries[qids[0]], TOP, args.beam)])  # warm-up
    plain, plain_t = run(Mode.GENERATIVE, TOP, None)
    wide, _ = run(Mode.GENERATIVE, args.beam, None)
    base = score_run(qrels, plain)
    rows: list[dict[str, Any]] = []
    for name, cut in CUTS.items():
        flt = {"must": [{"key": "bucket", "range": {"lt": cut}}]}
        kept = {d for d in doc_of.values() if bucket(d) < cut}
        fq = {q: {d: r for d, r in qrels[q].items() if d in kept} for q in qids}
        fq = {q: r for q, r in fq.items() if any(v > 0 for v in r.values())}
        inside, inside_t = run(Mode.GENERATIVE, TOP, flt)
        post = {q: dict(list({d: s for d, s in hits.items() if d in kept}.items())[:TOP]) for q, hits in wide.items()}
        dense, _ = run(Mode.DENSE, TOP, flt)
        row: dict[str, Any] = {"filter": name, "documents": len(kept), "queries": len(fq)}
        for label, r in (("a_inside", inside), ("b_post", post), ("c_dense", dense)):
            m = score_run(fq, {q: r[q] for q in fq}) if fq else {"Hits@10": float("nan"), "nDCG@10": float("nan")}
            row[f"{label}_hits10"], row[f"{label}_ndcg10"] = m["Hits@10"], m["nDCG@10"]
        row["a_keeps"] = row["a_inside_ndcg10"] / base["nDCG@10"] if base["nDCG@10"] else float("nan")
        row["b_keeps"] = row["b_post_ndcg10"] / base["nDCG@10"] if base["nDCG@10"] else float("nan")
        row["a_first_ms"] = inside_t[0] * 1e3
        both: dict[str, list[float]] = {"plain": [], "inside": []}
        for q in qids:  # latency: the same query unfiltered and filtered, one after the other
            for label, f in (("plain", None), ("inside", flt)):
                t0 = time.perf_counter()
                engine.search([SearchQuery(args.tenant, queries[q], TOP, args.beam, filter=f)])
                both[label].append(time.perf_counter() - t0)
        row["a_p50_ms"] = percentile(both["inside"], 50) * 1e3
        row["unfiltered_p50_ms"] = percentile(both["plain"], 50) * 1e3
        row["a_vs_unfiltered_p50"] = row["a_p50_ms"] / row["unfiltered_p50_ms"]
        rows.append(row)
    store.close()
    print(f"unfiltered generative (full qrels, {len(qids)} queries): Hits@10 {base['Hits@10']:.3f} "
          f"nDCG@10 {base['nDCG@10']:.3f}, p50 {percentile(plain_t, 50) * 1e3:.1f} ms")
    table = print_table(rows, ["filter", "documents", "queries", "a_inside_ndcg10", "b_post_ndcg10", "c_dense_ndcg10",
                               "a_inside_hits10", "b_post_hits10", "c_dense_hits10", "a_keeps", "b_keeps",
                               "a_first_ms", "a_p50_ms", "unfiltered_p50_ms", "a_vs_unfiltered_p50"])
    costs = restriction_costs([int(x) for x in args.synthetic.split(",") if x])
    if costs:
        print_table(costs, ["docids", "filter", "matching", "rebuild_ms", "count_ms", "auto_ms", "whole_trie_ms"])
    write_json(args.out, {"environment": environment(torch.device("cpu")), "args": vars(args),
                          "restriction": costs,
                          "unfiltered": {**base, "queries": len(qids), "p50_ms": percentile(plain_t, 50) * 1e3},
                          "rows": rows, "table": table, "config": dataclasses.asdict(cfg) | {"qdrant_api_key": ""},
                          "nan_means": "no judged query has a relevant document passing the filter",
                          "numpy": np.__version__})


if __name__ == "__main__":
    main()

"""How good each training teacher is on held-out queries: the ranking `--teacher bm25|dense|fusion` gives,
scored like a retriever (nDCG@10, Recall@100) on a BEIR split the index never trains on.

    python integration/bench/bench_teacher.py --data ../shared/data/cranfield --split test \
        --out integration/bench/results/cranfield/no-queries/teacher-quality.json

A student trained towards a teacher's distribution can at best learn that ranking; this is the ceiling
each teacher offers. BM25 and dense are the baselines of the same run; fusion is their standardised mean.
"""

from __future__ import annotations

import argparse

import ir_measures
import torch
from common import environment, print_table, write_json
from ir_measures import R, nDCG

from genret.data.beir import load_corpus, load_qrels, load_queries
from genret.data.embed import TextEncoder
from genret.indexing.pairs import passage
from genret.indexing.teacher import TEACHERS, Teacher


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="BEIR folder")
    p.add_argument("--split", default="test")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    docs = load_corpus(args.data)
    queries, qrels = load_queries(args.data), load_qrels(args.data, args.split)
    qids = [q for q in qrels if q in queries]
    passages = [passage(d.title, d.text) for d in docs]
    encoder = TextEncoder()
    vectors = encoder.encode(passages, progress=True)
    rows = []
    for kind in (k for k in TEACHERS if k != "none"):
        teacher = Teacher(kind, passages, vectors, embed=lambda texts: encoder.encode(list(texts)))
        top, scores = teacher.rank([queries[q] for q in qids], 100)
        run = {q: {docs[int(r)].doc_id: float(s) for r, s in zip(top[i], scores[i], strict=True)}
               for i, q in enumerate(qids)}
        m = ir_measures.calc_aggregate([nDCG @ 10, R @ 100], qrels, run)
        rows.append({"teacher": kind, "nDCG@10": round(m[nDCG @ 10], 3), "Recall@100": round(m[R @ 100], 3)})
    print_table(rows, ["teacher", "nDCG@10", "Recall@100"])
    write_json(args.out, {"data": args.data, "split": args.split, "queries": len(qids), "rows": rows,
                          "environment": environment(torch.device("cpu"))})


if __name__ == "__main__":
    main()

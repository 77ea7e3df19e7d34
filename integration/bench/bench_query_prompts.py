"""What the generator's instruction changes in its queries: candidates generated for a sample of a
collection's documents under each instruction, checked by the round trip against every document.

    python integration/bench/bench_query_prompts.py --data ../shared/data/scifact --docs 100 \
        --instruction "Write a one-sentence scientific claim that this passage supports." \
        --out integration/bench/results/scifact/prompts/prompts-cpu.json

The first row is the default instruction (the baseline). Per instruction: candidates kept after
cleaning, the share whose own document the fused BM25+dense teacher ranks in the top 10 of the whole
collection (what `--round-trip 10` keeps), their mean reciprocal rank of the own document, mean words,
and generation seconds per document. The collection's judged queries' mean words are printed beside
them, as the style the candidates should have.
"""

from __future__ import annotations

import argparse
import random
import time

import numpy as np
import torch
from common import environment, print_table, write_json

from genret.data.beir import load_corpus, load_queries
from genret.data.embed import TextEncoder
from genret.indexing.pairs import passage
from genret.indexing.querygen import INSTRUCTION, SamplingSettings, load_generator
from genret.indexing.teacher import Teacher


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--docs", type=int, default=100, help="documents sampled (seed 0)")
    p.add_argument("--samples", type=int, default=4)
    p.add_argument("--instruction", action="append", default=[], help="an instruction to compare (repeatable)")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    device = torch.device("cpu")
    docs = load_corpus(args.data)
    passages = [passage(d.title, d.text) for d in docs]
    picked = sorted(random.Random(0).sample(range(len(docs)), min(args.docs, len(docs))))
    teacher = Teacher("fusion", passages, TextEncoder(device=device).encode(passages, progress=True), device)
    real = list(load_queries(args.data).values())
    rows = []
    for instruction in [INSTRUCTION, *args.instruction]:
        gen = load_generator("default", device, SamplingSettings(instruction=instruction))
        t0 = time.perf_counter()
        cands = [gen.generate([passages[i]], args.samples)[0] for i in picked]
        secs = (time.perf_counter() - t0) / len(picked)
        flat = [q for qs in cands for q in qs]
        owners = [i for i, qs in zip(picked, cands, strict=True) for _ in qs]
        ranked, _ = teacher.rank(flat, len(docs)) if flat else (np.zeros((0, 0), np.int64), None)
        own = [int(np.flatnonzero(r == o)[0]) + 1 for r, o in zip(ranked, owners, strict=True)]
        rows.append({"instruction": instruction, "candidates": len(flat),
                     "round_trip_10": float(np.mean([r <= 10 for r in own])) if own else 0.0,
                     "mrr": float(np.mean([1 / r for r in own])) if own else 0.0,
                     "words": float(np.mean([len(q.split()) for q in flat])) if flat else 0.0,
                     "s_per_doc": secs})
    print(f"judged queries: {len(real)}, mean words {np.mean([len(q.split()) for q in real]):.1f}")
    print_table(rows, ["instruction", "candidates", "round_trip_10", "mrr", "words", "s_per_doc"])
    write_json(args.out, {"benchmark": "query_prompts", "data": args.data, "docs": len(picked),
                          "samples": args.samples, "judged_query_words": float(np.mean([len(q.split()) for q in real])),
                          "environment": environment(device), "rows": rows})


if __name__ == "__main__":
    main()

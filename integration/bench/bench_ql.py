"""Query likelihood as a teacher: how well the packaged query generator (SmolLM2-135M-Instruct) ranks a
collection's documents for judged queries by log p(query | passage), against the teachers a build can use
today (BM25, dense and their fusion), and what its scores cost.

    python integration/bench/bench_ql.py --qdrant-path Q --collection scifact --tenant sf \
        --data ../shared/data/scifact --split dev --build sf5=IDX-sf5 \
        --out integration/bench/results/scifact/teachers/ql-dev-cpu.json

For each query the candidates are the top ``--candidates`` documents of BM25 and of dense (Qdrant), in
one set. Each candidate is scored by the log-probability of the query's tokens as the generator's answer
to the prompt it writes queries from (``genret.indexing.querygen``), the passage cut to
``--passage-tokens``. The candidates are then ordered by that score, by the fused teacher (the mean of the
standardised BM25 and dense scores, standardised here over the candidates), and by both added at weights
chosen on the same queries (upper bounds). Dense, BM25 and the build's generative list (``--build
NAME=INDEX_DIR``, docids in ``genret_docid_NAME``) are the same run's baselines.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch
from common import environment, print_table, write_json
from judged import BM25, DENSE, baseline_rows, build_arg, build_config, build_parser, judged_queries, served_runs

from genret.evaluation.evaluate import score_run
from genret.indexing.pairs import passage
from genret.indexing.querygen import SamplingSettings, load_generator
from genret.serving.engine import Engine
from genret.store import QdrantStore

WEIGHTS = (0.5, 1.0, 2.0)  # of the query likelihood added to the fused teacher, both standardised
DEPTH = 100
BATCH = 16  # (passage, query) pairs per forward pass
MAX_QUERY_TOKENS = 64


class QueryLikelihood:
    """log p(query | passage) under a chat-template causal LM, summed over the query's tokens."""

    def __init__(self, passage_tokens: int) -> None:
        self.generator = load_generator("default", torch.device("cpu"), SamplingSettings(max_input_tokens=passage_tokens))
        self.model, self.tokenizer = self.generator.model, self.generator.tokenizer

    def _prompt(self, text: str) -> list[int]:
        """The generator's own prompt for the passage, as token ids."""
        return list(self.tokenizer(self.generator.prompt(text), add_special_tokens=False)["input_ids"])

    @torch.inference_mode()
    def score(self, passages: Sequence[str], query: str) -> np.ndarray:
        """One log-likelihood of ``query`` per passage."""
        answer = list(self.tokenizer(" " + query, add_special_tokens=False)["input_ids"])[:MAX_QUERY_TOKENS]
        out = np.zeros(len(passages), np.float32)
        for s in range(0, len(passages), BATCH):
            prompts = [self._prompt(p) for p in passages[s : s + BATCH]]
            width = max(len(p) for p in prompts) + len(answer)
            ids = torch.full((len(prompts), width), int(self.tokenizer.pad_token_id or 0))
            mask = torch.zeros((len(prompts), width), dtype=torch.long)
            for i, p in enumerate(prompts):
                ids[i, : len(p) + len(answer)] = torch.tensor(p + answer)
                mask[i, : len(p) + len(answer)] = 1
            logp = self.model(input_ids=ids, attention_mask=mask).logits.float().log_softmax(-1)
            target = torch.tensor(answer)
            for i, p in enumerate(prompts):
                steps = logp[i, len(p) - 1 : len(p) + len(answer) - 1]
                out[s + i] = steps.gather(-1, target[:, None]).sum().item()
        return out


def standardise(x: np.ndarray) -> np.ndarray:
    return (x - x.mean()) / (x.std() + 1e-6)


def main() -> None:
    p = build_parser(__doc__, "a trained index, whose generative list is a baseline")
    p.add_argument("--candidates", type=int, default=10, help="top documents of BM25 and of dense, each")
    p.add_argument("--passage-tokens", type=int, default=200)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    name, index_dir = build_arg(p, args.build)
    if args.candidates < 10 or args.passage_tokens < 1:
        p.error("--candidates must be at least 10 (nDCG@10 ranks ten) and --passage-tokens at least 1")
    cfg = build_config(args, name, index_dir)
    qrels, fitted = judged_queries(args.data, args.split, cfg.max_query_chars)
    store = QdrantStore(cfg)
    try:
        engine = Engine.load(cfg, store)
        docs = list(store.scroll_tenant(args.tenant))
        texts = {d.doc_id: passage(d.title, d.text) for d in docs}
        runs = served_runs(engine, args.tenant, docs, fitted, name, DEPTH)
    finally:
        store.close()
    bm25, dense = runs[BM25], runs[DENSE]
    ql = QueryLikelihood(args.passage_tokens)
    k = args.candidates
    pool: dict[str, list[str]] = {}
    scores: dict[str, dict[str, np.ndarray]] = {}
    t0 = time.perf_counter()
    for n, q in enumerate(fitted):
        firsts = [sorted(run[q], key=run[q].__getitem__, reverse=True)[:k] for run in (bm25, dense)]
        cands = list(dict.fromkeys(firsts[0] + firsts[1]))
        pool[q] = cands
        floor_b, floor_d = min(bm25[q].values(), default=0.0), min(dense[q].values(), default=0.0)
        scores[q] = {"bm25": np.array([bm25[q].get(d, floor_b) for d in cands]),
                     "dense": np.array([dense[q].get(d, floor_d) for d in cands]),
                     "ql": ql.score([texts[d] for d in cands], fitted[q])}
        if n % 20 == 0:
            print(f"query {n}/{len(fitted)}: {time.perf_counter() - t0:.0f} s", flush=True)
    seconds = time.perf_counter() - t0
    pairs = sum(len(c) for c in pool.values())

    def ndcg(order_by: dict[str, np.ndarray]) -> float:
        run = {q: {d: float(v) for d, v in zip(pool[q], order_by[q], strict=True)} for q in pool}
        return round(score_run(qrels, run)["nDCG@10"], 3)

    fused = {q: standardise(s["bm25"]) + standardise(s["dense"]) for q, s in scores.items()}
    lik = {q: standardise(s["ql"]) for q, s in scores.items()}
    table = baseline_rows(qrels, runs, "ranking")
    table += [{"ranking": "candidates by the fused teacher", "weight": "", "nDCG@10": ndcg(fused)},
              {"ranking": "candidates by query likelihood", "weight": "", "nDCG@10": ndcg(lik)},
              *({"ranking": "candidates by the fused teacher + query likelihood", "weight": w,
                 "nDCG@10": ndcg({q: fused[q] / 2 + w * lik[q] for q in pool})} for w in WEIGHTS)]
    print_table(table, ["ranking", "weight", "nDCG@10"])
    print(f"{pairs} (query, passage) pairs scored in {seconds:.0f} s: {seconds / pairs:.3f} s a pair", flush=True)
    write_json(args.out, {"data": args.data, "split": args.split, "queries": len(pool), "documents": len(docs),
                          "build": args.build, "candidates_each": k, "passage_tokens": args.passage_tokens,
                          "pairs": pairs, "query_likelihood_seconds": round(seconds, 1),
                          "seconds_per_pair": round(seconds / pairs, 4), "rows": table,
                          "environment": environment(torch.device("cpu"))})


if __name__ == "__main__":
    main()

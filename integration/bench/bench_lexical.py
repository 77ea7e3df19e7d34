"""What HYBRID's lexical list costs: building a tenant's BM25 index (scroll included) and answering a query
with it, against a dense search of the same tenant in Qdrant, at three tenant sizes.

    python integration/bench/bench_lexical.py [--out integration/bench/results/synthetic/lexical/lexical-cpu.json]

The tenants hold copies of the demo corpus's Cranfield abstracts (each copy a new document; the words
are real, so the vocabulary stops growing after the first copy). Their dense vectors are random unit
vectors: the dense search is there as the cost every HYBRID search already pays, not for its ranking.
Queries are Cranfield's 225. Memory is what the built index keeps (tracemalloc: allocated after the
build and still held), per document.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import tracemalloc

import numpy as np
import torch
from common import environment, percentile, print_table, timed, write_json

from genret.config import Config
from genret.data.beir import demo_corpus_path, load_corpus, load_queries
from genret.serving.lexical import LexicalIndexes
from genret.store import QdrantStore

DIM = 384


def load_tenant(store: QdrantStore, tenant: str, copies: int, seed: int) -> int:
    base = load_corpus(demo_corpus_path())
    docs = [(f"{d.doc_id}-{c}", d.title, d.text) for c in range(copies) for d in base]
    vectors = np.random.default_rng(seed).standard_normal((len(docs), DIM)).astype(np.float32)
    store.upsert_documents(tenant, docs, vectors / np.linalg.norm(vectors, axis=1, keepdims=True))
    return len(docs)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--copies", default="1,4,16", help="copies of the corpus in each tenant")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--k", type=int, default=100, help="list depth (HYBRID's default beam is 20; eval uses 100)")
    p.add_argument("--out", default="integration/bench/results/synthetic/lexical/lexical-cpu.json")
    args = p.parse_args()
    queries = list(load_queries(demo_corpus_path()).values())
    rng = np.random.default_rng(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        store = QdrantStore(Config(qdrant_path=tmp, collection="lexical"))
        store.ensure_collection(DIM)
        for i, copies in enumerate(int(c) for c in args.copies.split(",")):
            tenant = f"t{copies}"
            t0 = time.perf_counter()
            docs = load_tenant(store, tenant, copies, i)
            load_s = time.perf_counter() - t0
            indexes = LexicalIndexes(store)

            def build(ix: LexicalIndexes = indexes, t: str = tenant) -> None:
                ix.changed(t)
                ix.prepare(t)

            builds = timed(build, torch.device("cpu"), args.repeats)
            indexes.changed(tenant)
            tracemalloc.start()
            before = tracemalloc.get_traced_memory()[0]
            indexes.prepare(tenant)
            held = tracemalloc.get_traced_memory()[0] - before
            tracemalloc.stop()
            lexical_ms, dense_ms = [], []
            for q in queries:
                vector = rng.standard_normal(DIM).astype(np.float32)
                t0 = time.perf_counter()
                indexes.search(tenant, q, args.k)
                lexical_ms.append((time.perf_counter() - t0) * 1e3)
                t0 = time.perf_counter()
                store.dense_search(tenant, vector / np.linalg.norm(vector), args.k, False)
                dense_ms.append((time.perf_counter() - t0) * 1e3)
            rows.append({"tenant_docs": docs, "load_s": load_s, "build_s_p50": percentile(builds, 50),
                         "build_s_max": max(builds), "held_bytes_per_doc": held / docs,
                         "lexical_ms_p50": percentile(lexical_ms, 50), "lexical_ms_p99": percentile(lexical_ms, 99),
                         "dense_ms_p50": percentile(dense_ms, 50), "dense_ms_p99": percentile(dense_ms, 99)})
        store.close()
    print_table(rows, ["tenant_docs", "build_s_p50", "build_s_max", "held_bytes_per_doc", "lexical_ms_p50",
                       "lexical_ms_p99", "dense_ms_p50", "dense_ms_p99"])
    write_json(args.out, {"benchmark": "lexical_list", "queries": len(queries), "k": args.k,
                          "qdrant": "embedded (qdrant-client local mode)",
                          "environment": environment(torch.device("cpu")), "rows": rows})


if __name__ == "__main__":
    main()

"""What HYBRID's lexical list costs: building a tenant's BM25 index (scroll included), changing it in place
for a write, and answering a query with it, against a dense search of the same tenant in Qdrant and the
same query on a bm25s index of the same texts (the evaluation's BM25), at three tenant sizes.

    python integration/bench/bench_lexical.py [--out integration/bench/results/synthetic/lexical/lexical-cpu.json]

The tenants hold copies of the demo corpus's Cranfield abstracts (each copy a new document; the words are
real, so the vocabulary stops growing after the first copy). Their dense vectors are random unit vectors:
the dense search is there as the cost every HYBRID search already pays, not for its ranking. Queries are
Cranfield's 225. Memory is what the built index keeps (tracemalloc: allocated after the build and still
held), per document. A write replaces one document's text by another's, in place (``changed`` with the
text, as the writer calls it once Qdrant holds the write); the build it spares is the row's build time.
Queries are timed again after the writes. Indexing the same texts without the scroll is timed for this
index and for bm25s. Last, a write at the per-call size limit (40 documents of 95,000 characters) is
timed with its tokenizing in the calling thread and in a worker process: wall time and the calling
thread's CPU time (what the server's interpreter lock is held for).
"""

from __future__ import annotations

import argparse
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from common import environment, percentile, print_table, timed, write_json

from genret.config import Config
from genret.data.beir import demo_corpus_path, load_corpus, load_queries
from genret.data.lexical import Bm25
from genret.data.writable_bm25 import WritableBm25
from genret.serving.lexical import LexicalIndexes
from genret.store import QdrantStore

DIM = 384


def load_tenant(store: QdrantStore, tenant: str, copies: int, seed: int) -> int:
    base = load_corpus(demo_corpus_path())
    docs = [(f"{d.doc_id}-{c}", d.title, d.text) for c in range(copies) for d in base]
    vectors = np.random.default_rng(seed).standard_normal((len(docs), DIM)).astype(np.float32)
    store.upsert_documents(tenant, docs, vectors / np.linalg.norm(vectors, axis=1, keepdims=True))
    return len(docs)


def _ms(call: Callable[..., object], *args: Any) -> float:
    t0 = time.perf_counter()
    call(*args)
    return (time.perf_counter() - t0) * 1e3


def large_write(store: QdrantStore, tenant: str, processes: int, repeats: int) -> dict[str, float]:
    """One write at the per-call size limit (40 documents of 95,000 characters of Cranfield abstracts) into
    the tenant's held index, ``repeats`` times (each removed again): its wall time and the CPU time of the
    calling thread, which is what the server's interpreter lock is held for."""
    words = " ".join(f"{d.title} {d.text}" for d in load_corpus(demo_corpus_path()))
    written = [(f"large-{i}", words[i * 95_000:(i + 1) * 95_000]) for i in range(40)]
    indexes = LexicalIndexes(store, processes=processes)
    indexes.prepare(tenant)
    indexes.changed(tenant, written)  # the first starts the worker processes: not timed
    indexes.changed(tenant, [], [k for k, _ in written])
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.thread_time()
        indexes.changed(tenant, written)
        wall.append((time.perf_counter() - t0) * 1e3)
        cpu.append((time.thread_time() - c0) * 1e3)
        indexes.changed(tenant, [], [k for k, _ in written])
    assert tenant in indexes.held()
    return {"processes": processes, "wall_ms_p50": percentile(wall, 50), "thread_cpu_ms_p50": percentile(cpu, 50)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--copies", default="1,4,16", help="copies of the corpus in each tenant")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--k", type=int, default=100, help="list depth (HYBRID's default beam is 20; eval uses 100)")
    p.add_argument("--writes", type=int, default=200, help="one-document writes timed in each tenant")
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
            texts = [(d.point_id, f"{d.title} {d.text}") for d in store.scroll_tenant(tenant)]
            reference = Bm25([t for _, t in texts])
            index_s = timed(lambda x=texts: WritableBm25(x), torch.device("cpu"), args.repeats)
            bm25s_index_s = timed(lambda x=texts: Bm25([t for _, t in x]), torch.device("cpu"), args.repeats)
            lexical_ms, dense_ms, bm25s_ms = [], [], []
            for q in queries:
                vector = rng.standard_normal(DIM).astype(np.float32)
                lexical_ms.append(_ms(indexes.search, tenant, q, args.k))
                dense_ms.append(_ms(store.dense_search, tenant, vector / np.linalg.norm(vector), args.k, False))
                bm25s_ms.append(_ms(reference.top, [q], args.k))
            write_ms = []
            for _ in range(args.writes):
                pid, text = texts[int(rng.integers(len(texts)))][0], texts[int(rng.integers(len(texts)))][1]
                write_ms.append(_ms(indexes.changed, tenant, [(pid, text)]))
            assert tenant in indexes.held()  # changed in place, not dropped
            after_ms = [_ms(indexes.search, tenant, q, args.k) for q in queries]
            rows.append({"tenant_docs": docs, "load_s": load_s, "build_s_p50": percentile(builds, 50),
                         "build_s_max": max(builds), "held_bytes_per_doc": held / docs,
                         "index_s_p50": percentile(index_s, 50), "bm25s_index_s_p50": percentile(bm25s_index_s, 50),
                         "write_ms_p50": percentile(write_ms, 50), "write_ms_p99": percentile(write_ms, 99),
                         "lexical_ms_p50": percentile(lexical_ms, 50), "lexical_ms_p99": percentile(lexical_ms, 99),
                         "after_writes_ms_p50": percentile(after_ms, 50),
                         "after_writes_ms_p99": percentile(after_ms, 99),
                         "bm25s_ms_p50": percentile(bm25s_ms, 50), "bm25s_ms_p99": percentile(bm25s_ms, 99),
                         "dense_ms_p50": percentile(dense_ms, 50), "dense_ms_p99": percentile(dense_ms, 99)})
        large = [large_write(store, "t1", processes, 5) for processes in (0, 2)]
        store.close()
    print_table(rows, ["tenant_docs", "build_s_p50", "index_s_p50", "bm25s_index_s_p50", "held_bytes_per_doc",
                       "write_ms_p50", "write_ms_p99", "lexical_ms_p50", "lexical_ms_p99", "after_writes_ms_p50",
                       "bm25s_ms_p50", "bm25s_ms_p99", "dense_ms_p50", "dense_ms_p99"])
    print_table(large, ["processes", "wall_ms_p50", "thread_cpu_ms_p50"])
    write_json(args.out, {"benchmark": "lexical_list", "queries": len(queries), "k": args.k,
                          "qdrant": "embedded (qdrant-client local mode)",
                          "writes": args.writes, "environment": environment(torch.device("cpu")), "rows": rows,
                          "large_write": large})


if __name__ == "__main__":
    main()

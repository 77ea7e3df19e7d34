"""Many tenants in one collection and one sidecar: trie memory, write-to-visible latency, mixed batches.

    python integration/bench/bench_tenancy.py [--small 1000 --docs 100 --big 100000] [--out ...json]

Setup: an embedded Qdrant collection (no dense vectors) with ``--small`` tenants of ``--docs`` documents
and one tenant of ``--big`` documents, with synthetic semantic docids (base 10) in their payloads; a tiny
randomly initialised model (decoding cost, not quality, is measured); the sidecar on 127.0.0.1 over gRPC.
Measured, over the socket:
  upsert -> searchable   latency of UpsertDocuments (1 document); on return its docid is in the tenant's
                         trie (checked after each call)
  delete -> invisible    latency of DeleteDocuments (1 document); on return it is out of the trie (checked)
  search                 SearchBatch of 32 queries, beam 20: all from the big tenant, all from one small
                         tenant, or 32 different small tenants (mixed) in one batch
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import environment, percentile, print_table, write_json

from genret.api.server import ServerThread
from genret.client import GenretClient
from genret.config import Config, force_offline
from genret.data.index_dir import MODEL_DIR, Manifest, write_manifest
from genret.docids import SemanticCodec
from genret.indexing.models import build_tiny_model
from genret.serving.engine import Engine
from genret.store import QdrantStore, point_id_for

WORDS = ("wing flutter shock boundary layer heat transfer pressure laminar turbulent supersonic nozzle "
         "buckling shell plate vortex drag lift cylinder cone jet flow").split()


def text(rng: random.Random) -> str:
    return " ".join(rng.choices(WORDS, k=12))


def docid(i: int, digits: int) -> str:
    return "-".join(str(i // 10**k % 10) for k in range(digits - 1, -1, -1))


def load(store: QdrantStore, tenant: str, n: int, digits: int, rng: random.Random) -> None:
    for s in range(0, n, 2048):
        ids = range(s, min(n, s + 2048))
        store.upsert_documents(tenant, [(f"d{i}", "", text(rng)) for i in ids], None,
                               docids=[docid(i, digits) for i in ids], batch_size=2048)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--small", type=int, default=1000)
    p.add_argument("--docs", type=int, default=100)
    p.add_argument("--big", type=int, default=100_000)
    p.add_argument("--writes", type=int, default=100, help="upserts and deletes timed, each")
    p.add_argument("--batches", type=int, default=10, help="SearchBatch calls timed per kind")
    p.add_argument("--out", default="integration/bench/results/synthetic/tenancy/tenancy-cpu.json")
    args = p.parse_args()
    force_offline()
    rng = random.Random(0)
    tmp = Path(tempfile.mkdtemp(prefix="genret-tenancy-"))
    cfg = Config(qdrant_path=str(tmp / "q"), collection="tenancy", index_dir=str(tmp / "idx"), device="cpu",
                 port=0, tenant_max_inflight=10_000, max_inflight=10_000,
                 tenant_max_new_docids=0)  # synthetic docids no model was trained on: no quota
    codec = SemanticCodec(10, 6)
    store = QdrantStore(cfg)
    store.ensure_collection(None)
    t0 = time.perf_counter()
    small = [f"tenant-{i:04d}" for i in range(args.small)]
    for t in small:
        load(store, t, args.docs, 2, rng)
    load(store, "big", args.big, 5, rng)
    load_s = time.perf_counter() - t0
    print(f"loaded {args.small} x {args.docs} + {args.big} documents in {load_s:.0f}s", flush=True)

    model, tok, spec = build_tiny_model(codec.vocab_size)
    idx = Path(cfg.index_dir)
    model.save_pretrained(idx / MODEL_DIR)
    tok.save_pretrained(idx / MODEL_DIR)
    write_manifest(idx, Manifest(collection=cfg.collection, tenant_key=cfg.tenant_key, codec=codec.to_json(),
                                 model=dataclasses.asdict(spec), tenants={}))
    t0 = time.perf_counter()
    engine = Engine.load(cfg, store)
    start_s = time.perf_counter() - t0
    forests = [part.forest for ns in engine.namespaces.by_tenant.values() for part in ns.parts]
    total = args.small * args.docs + args.big
    result: dict[str, Any] = {
        "documents": total, "tenants": args.small + 1, "load_s": load_s, "sidecar_start_s": start_s,
        "trie_nodes": sum(f.num_nodes for f in forests), "trie_bytes_per_docid": sum(f.nbytes() for f in forests) / total,
        "trie_device_bytes_per_docid": sum(f.device_nbytes() for f in forests) / total}

    with ServerThread(cfg, engine) as server, GenretClient(server.target, timeout_s=120) as client:
        ups, dels = [], []
        for i in range(args.writes):
            tenant = "big" if i % 10 == 0 else rng.choice(small)
            doc = f"new{i}"
            t0 = time.perf_counter()
            client.upsert(tenant, [(doc, "", text(rng))])
            ups.append(time.perf_counter() - t0)
            assert point_id_for(tenant, doc) in engine.namespaces.entries_set(tenant)
            t0 = time.perf_counter()
            client.delete(tenant, [doc])
            dels.append(time.perf_counter() - t0)
            assert point_id_for(tenant, doc) not in engine.namespaces.entries_set(tenant)
        result |= {"upsert_ms_p50": percentile(ups, 50) * 1e3, "upsert_ms_p99": percentile(ups, 99) * 1e3,
                   "delete_ms_p50": percentile(dels, 50) * 1e3, "delete_ms_p99": percentile(dels, 99) * 1e3}

        kinds = {"big tenant": lambda: ["big"] * 32, "one small tenant": lambda: [rng.choice(small)] * 32,
                 "32 small tenants (mixed)": lambda: rng.sample(small, 32)}
        for name, tenants_of in kinds.items():
            times = []
            for b in range(args.batches + 1):
                tenants = tenants_of()
                queries = [text(rng) for _ in tenants]
                t0 = time.perf_counter()
                resp = client.stub.SearchBatch(
                    client_requests(tenants, queries), timeout=120)
                if b:  # the first batch warms up
                    times.append(time.perf_counter() - t0)
                assert len(resp.responses) == 32
            result[f"search q/s: {name}"] = 32 / float(np.mean(times))
            result[f"search batch ms p50: {name}"] = percentile(times, 50) * 1e3
    store.close()
    rows = [{"metric": k, "value": v} for k, v in result.items()]
    table = print_table(rows, ["metric", "value"])
    write_json(args.out, {"benchmark": "tenancy", "environment": environment(torch.device("cpu")),
                          "settings": vars(args), "result": result, "table": table})


def client_requests(tenants: list[str], queries: list[str]) -> Any:
    from genret.v1 import genret_pb2 as pb

    return pb.SearchBatchRequest(requests=[pb.SearchRequest(tenant=t, query=q, top_k=10, beam_size=20)
                                           for t, q in zip(tenants, queries, strict=True)])


if __name__ == "__main__":
    main()

"""Latency of each search mode through the sidecar over gRPC, one query per call.

    GENRET_QDRANT_PATH=... GENRET_COLLECTION=... python integration/bench/bench_modes.py \
        --index-dir IDX --data ../shared/data/cranfield --split test --tenant cran [--beam-size 20]

The sidecar runs in this process on 127.0.0.1 (its own event loop and thread); a client sends each
judged query of the split as one ``Search`` call per mode, after one untimed warm-up pass over the same
queries. Dense search is the baseline: it is what Qdrant alone gives (plus the sidecar's gRPC hop).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from typing import Any

import numpy as np
from common import collection_args, environment, print_table, write_json

from genret.api.server import ServerThread
from genret.client import GenretClient
from genret.config import force_offline, load_config
from genret.data.beir import load_qrels, load_queries
from genret.devices import resolve_device
from genret.serving.engine import Engine
from genret.store import QdrantStore

MODES = [("dense", "default"), ("generative", "default"), ("hybrid", "rrf"), ("hybrid", "rescore"),
         ("hybrid", "weighted"), ("hybrid", "learned"), ("auto", "default")]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--index-dir", required=True)
    collection_args(p)
    p.add_argument("--tenant", required=True)
    p.add_argument("--beam-size", type=int, default=20)
    p.add_argument("--top-k", type=int, default=10)
    p.add_argument("--modes", default="", help="comma-separated modes to time (default: all)")
    p.add_argument("--out", default="integration/bench/results/cranfield/modes/modes-latency-cpu.json")
    args = p.parse_args()
    wanted = set(filter(None, args.modes.split(","))) or {m for m, _ in MODES}
    if unknown := wanted - {m for m, _ in MODES}:
        p.error(f"unknown --modes {', '.join(sorted(unknown))}; valid: {', '.join(dict.fromkeys(m for m, _ in MODES))}")
    force_offline()
    cfg = dataclasses.replace(load_config(), index_dir=args.index_dir, port=0, host="127.0.0.1")
    device = resolve_device(cfg.device)
    store = QdrantStore(cfg)
    engine = Engine.load(cfg, store)
    queries = load_queries(args.data)
    texts = [queries[q] for q in load_qrels(args.data, args.split) if q in queries]
    rows: list[dict[str, Any]] = []
    with ServerThread(cfg, engine) as server, GenretClient(server.target, timeout_s=60) as client:
        for mode, fusion in MODES:
            if fusion in ("learned", "weighted") and engine.calibration is None or mode not in wanted:
                continue
            for q in texts:  # warm-up
                client.search(args.tenant, q, args.top_k, args.beam_size, mode, fusion=fusion)
            lat = []
            for q in texts:
                t0 = time.perf_counter()
                client.search(args.tenant, q, args.top_k, args.beam_size, mode, fusion=fusion)
                lat.append((time.perf_counter() - t0) * 1000)
            a = np.array(lat)
            rows.append({"mode": mode, "fusion": fusion, "queries": len(a), "p50 ms": round(float(np.percentile(a, 50)), 1),
                         "p99 ms": round(float(np.percentile(a, 99)), 1), "mean ms": round(float(a.mean()), 1)})
            print(rows[-1], flush=True)
    store.close()
    table = print_table(rows, list(rows[0]))
    write_json(args.out, {"benchmark": "modes_latency", "environment": environment(device), "data": args.data,
                          "split": args.split, "settings": vars(args), "rows": rows, "table": table})


if __name__ == "__main__":
    main()

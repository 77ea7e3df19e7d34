"""What the Qdrant front door adds to a call: the same qdrant-client call made directly and through the door.

    python integration/bench/bench_qdrant_door.py [--points 2000] [--dim 384] [--calls 400]
        [--out integration/bench/results/synthetic/qdrant-door/door-cpu.json]

Embedded mode on both sides: one embedded Qdrant opened directly by ``QdrantClient(path=...)`` in this
process, and one behind a sidecar (``genret serve --qdrant-port 0``, its own process, as deployed) whose
front door an unmodified ``QdrantClient(prefer_grpc=True)`` calls over gRPC on 127.0.0.1. Both hold the
same collection (``--points`` random unit vectors with a tenant and a year in their payloads). Calls
alternate between the two paths, so both see the same machine state:

* pass-through: a dense ``query_points`` with a tenant filter, limit 10, payloads; and a ``count`` (the
  floor: what any call pays for the hop);
* generative: ``query_points`` with ``Document(model="genret")`` through the door, against genret's own
  ``GenRet.Search`` for the same text (a tiny model over 24 Cranfield documents: the door's own cost, not
  the model's, is what differs).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import environment, percentile, print_table, write_json

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TRITON_INTERPRET", "0" if torch.cuda.is_available() else "1")


def _fill(client: Any, name: str, vectors: np.ndarray) -> None:
    from qdrant_client import models

    client.create_collection(name, vectors_config=models.VectorParams(size=vectors.shape[1],
                                                                      distance=models.Distance.COSINE))
    for s in range(0, len(vectors), 500):
        client.upsert(name, points=[models.PointStruct(id=i, vector=vectors[i].tolist(),
                                                       payload={"tenant": f"t{i % 4}", "year": 1950 + i % 70})
                                    for i in range(s, min(s + 500, len(vectors)))])


def _served_index(tmp: Path) -> Any:
    from genret.config import Config
    from genret.data.loader import load_beir
    from genret.indexing.indexer import IndexOptions, build_index
    from genret.indexing.training import TrainConfig
    from genret.indexing.training_data import PairOptions
    from genret.store import QdrantStore
    from integration.conftest import small_corpus

    cfg = Config(qdrant_path=str(tmp / "sidecar"), collection="served", index_dir=str(tmp / "index"), port=0,
                 qdrant_port=0, device="cpu")
    store = QdrantStore(cfg)
    load_beir(store, small_corpus(tmp, 24), "t0", with_vectors=False)
    opts = IndexOptions(scheme="atomic", model="tiny", pairs=PairOptions(max_chunks=1),
                        train=TrainConfig(epochs=5, batch_size=16, progress=False, seed=0))
    build_index(store, cfg.index_dir, opts, torch.device("cpu"))
    return cfg, store


def _serve(cfg: Any, tmp: Path) -> tuple[subprocess.Popen[str], str, int]:
    """``genret serve`` with the front door on, in its own process; (process, genret.v1 target, door port)."""
    cmd = [sys.executable, "-m", "genret.cli", "serve", "--qdrant-path", cfg.qdrant_path, "--collection",
           cfg.collection, "--index-dir", cfg.index_dir, "--device", "cpu", "--port", "0", "--qdrant-port", "0"]
    proc = subprocess.Popen(cmd, cwd=tmp, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    target, door = "", 0
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("genret: serving on "):
            target = line.split()[-1]
        elif line.startswith("genret: Qdrant front door on "):
            door = int(line.split(":")[-1])
            return proc, target, door
    raise RuntimeError("genret serve exited before serving")


def _stats(name: str, direct: list[float], door: list[float]) -> dict[str, Any]:
    d50, d99 = percentile(direct, 50) * 1e3, percentile(direct, 99) * 1e3
    f50, f99 = percentile(door, 50) * 1e3, percentile(door, 99) * 1e3
    return {"call": name, "direct_p50_ms": d50, "direct_p99_ms": d99, "door_p50_ms": f50, "door_p99_ms": f99,
            "added_p50_ms": f50 - d50, "added_p99_ms": f99 - d99, "calls": len(door)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--points", type=int, default=2000)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--calls", type=int, default=400)
    p.add_argument("--out", default="integration/bench/results/synthetic/qdrant-door/door-cpu.json")
    args = p.parse_args()

    import grpc
    from qdrant_client import QdrantClient, models

    from genret.v1 import genret_pb2 as pb
    from genret.v1 import genret_pb2_grpc as pb_grpc

    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((args.points, args.dim)).astype(np.float32)
    queries = rng.standard_normal((args.calls + 20, args.dim)).astype(np.float32)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        cfg, store = _served_index(tmp)
        _fill(store.client, "bench", vectors)
        store.close()
        direct = QdrantClient(path=str(tmp / "direct"))
        _fill(direct, "bench", vectors)
        proc, target, port = _serve(cfg, tmp)
        try:
            door = QdrantClient(host="127.0.0.1", grpc_port=port, prefer_grpc=True, cloud_inference=True,
                                check_compatibility=False)
            channel = grpc.insecure_channel(target)
            stub = pb_grpc.GenRetStub(channel)
            flt = models.Filter(must=[models.FieldCondition(key="tenant", match=models.MatchValue(value="t1"))])

            def dense(client: Any, i: int) -> float:
                t0 = time.perf_counter()
                client.query_points("bench", query=queries[i].tolist(), query_filter=flt, limit=10,
                                    with_payload=True)
                return time.perf_counter() - t0

            def count(client: Any, i: int) -> float:
                t0 = time.perf_counter()
                client.count("bench", exact=True)
                return time.perf_counter() - t0

            titles = [r.payload["title"] for r in door.scroll("served", limit=100, with_payload=["title"])[0]]
            t0_filter = models.Filter(must=[models.FieldCondition(key="tenant", match=models.MatchValue(value="t0"))])

            def generative_door(i: int) -> float:
                t0 = time.perf_counter()
                door.query_points("served", query=models.Document(text=titles[i % len(titles)], model="genret"),
                                  query_filter=t0_filter, limit=10, with_payload=True)
                return time.perf_counter() - t0

            def generative_own(i: int) -> float:
                t0 = time.perf_counter()
                stub.Search(pb.SearchRequest(tenant="t0", query=titles[i % len(titles)], top_k=10, with_payload=True))
                return time.perf_counter() - t0

            for i in range(20):  # warm-up
                dense(direct, i), dense(door, i), count(direct, i), count(door, i)
                generative_door(i), generative_own(i)
            times: dict[str, list[float]] = {k: [] for k in ("direct", "door", "cdirect", "cdoor", "own", "gdoor")}
            for i in range(args.calls):  # one kind of call at a time, the two paths alternating
                times["direct"].append(dense(direct, i))
                times["door"].append(dense(door, i))
            for i in range(args.calls):
                times["cdirect"].append(count(direct, i))
                times["cdoor"].append(count(door, i))
            for i in range(args.calls):
                times["own"].append(generative_own(i))
                times["gdoor"].append(generative_door(i))
            door.close()
            channel.close()
        finally:
            proc.terminate()
            proc.wait(timeout=60)
        direct.close()
    rows = [_stats("dense query_points (pass-through)", times["direct"], times["door"]),
            _stats("count (pass-through)", times["cdirect"], times["cdoor"]),
            _stats("generative: GenRet.Search vs front door", times["own"], times["gdoor"])]
    print_table(rows, ["call", "direct_p50_ms", "door_p50_ms", "added_p50_ms", "direct_p99_ms", "door_p99_ms",
                       "added_p99_ms", "calls"])
    env = environment(torch.device("cpu"))
    for pkg in ("qdrant-client", "grpcio"):
        env["versions"][pkg] = metadata.version(pkg)
    write_json(args.out, {"environment": env, "args": vars(args), "rows": rows,
                          "note": "direct: QdrantClient(path=...) in process; door: QdrantClient(prefer_grpc=True) "
                                  "over gRPC to the sidecar (genret serve, another process), which runs the call "
                                  "on its embedded Qdrant"})


if __name__ == "__main__":
    main()

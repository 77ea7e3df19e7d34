"""What a sidecar restart costs, by collection size, on the embedded Qdrant.

    python integration/bench/bench_restart.py [--sizes 50000,200000] [--tenants 100] \
        [--index-dir genret-data/index] [--out integration/bench/results/synthetic/restart/restart-cpu.json]

For each size a fresh embedded collection gets that many synthetic points: 384-d vectors, a tenant among
``--tenants``, a short title and text, and a semantic docid (branching 10, depth 6). Then the sidecar's
start-up is timed step by step, as ``Engine.load`` runs it:

* opening the embedded Qdrant (qdrant-client's local mode reads every point into memory);
* rebuilding every tenant's namespace from the docids in the payloads (one scroll, then the tries);
* loading the model of ``--index-dir`` (the demo's MiniLM encoder + decoder), which does not grow with
  the collection.

A line through the sizes' totals gives the figure at 1M documents, printed as an extrapolation. A Qdrant
server keeps its points itself: there, start-up is the scroll and the tries, not the opening.
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch
from common import environment, print_table, write_json

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from qdrant_client import QdrantClient, models  # noqa: E402

from genret.config import Config  # noqa: E402
from genret.docids import SemanticCodec  # noqa: E402
from genret.serving.namespaces import load_namespaces  # noqa: E402
from genret.store import DOCID_KEY, VECTOR_NAME, QdrantStore, point_id_for  # noqa: E402

DIM = 384
COLLECTION = "restart"


def fill(path: Path, n: int, tenants: int, seed: int = 0) -> float:
    """``n`` synthetic points in a new embedded collection at ``path``; seconds it took."""
    rng = np.random.default_rng(seed)
    codes = rng.choice(10**6, n, replace=False)
    t0 = time.perf_counter()
    client = QdrantClient(path=str(path))
    client.create_collection(COLLECTION, vectors_config={VECTOR_NAME: models.VectorParams(
        size=DIM, distance=models.Distance.COSINE)})
    for s in range(0, n, 2000):
        vectors = rng.standard_normal((min(2000, n - s), DIM), dtype=np.float32)
        points = []
        for j, vec in enumerate(vectors):
            i = s + j
            tenant = f"t{i % tenants:03d}"
            docid = "-".join(f"{codes[i]:06d}")
            points.append(models.PointStruct(
                id=point_id_for(tenant, str(i)), vector={VECTOR_NAME: vec.tolist()},
                payload={"tenant": tenant, "doc_id": str(i), "title": f"document {i}",
                         "text": "measurements of the boundary layer on a flat plate at supersonic speed " * 2,
                         DOCID_KEY: docid}))
        client.upsert(COLLECTION, points, wait=True)
    client.close()
    return time.perf_counter() - t0


def restart(path: Path) -> dict[str, float]:
    gc.collect()
    rss0 = psutil.Process().memory_info().rss
    t0 = time.perf_counter()
    store = QdrantStore(Config(qdrant_path=str(path), collection=COLLECTION))
    store.exists()
    opened = time.perf_counter() - t0
    t1 = time.perf_counter()
    namespaces = load_namespaces(store, SemanticCodec(10, 6))
    rebuilt = time.perf_counter() - t1
    rss = psutil.Process().memory_info().rss - rss0
    docs = sum(namespaces.counts.values())
    store.close()
    return {"open_qdrant_s": opened, "namespaces_s": rebuilt, "documents": docs, "rss_added_mb": rss / 2**20}


def model_load_s(index_dir: Path) -> float | None:
    if not (index_dir / "model").exists():
        return None
    from genret.decoding.model import load_trained

    t0 = time.perf_counter()
    load_trained(str(index_dir / "model"))
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="50000,200000")
    p.add_argument("--tenants", type=int, default=100)
    p.add_argument("--index-dir", default="genret-data/index")
    p.add_argument("--out", default="integration/bench/results/synthetic/restart/restart-cpu.json")
    args = p.parse_args()
    model_s = model_load_s(Path(args.index_dir))
    rows: list[dict[str, Any]] = []
    for n in (int(x) for x in args.sizes.split(",")):
        with tempfile.TemporaryDirectory(prefix="genret-restart-") as tmp:
            filled = fill(Path(tmp) / "q", n, args.tenants)
            row = {"documents_stored": n, "fill_s": filled, **restart(Path(tmp) / "q"), "model_s": model_s or 0.0}
            row["restart_s"] = row["open_qdrant_s"] + row["namespaces_s"] + row["model_s"]
            rows.append(row)
            print_table([row], list(row))
    sizes = np.array([r["documents_stored"] for r in rows], dtype=float)
    totals = np.array([r["restart_s"] for r in rows])
    rss = np.array([r["rss_added_mb"] for r in rows])
    extrapolated: dict[str, Any] = {}
    if len(rows) >= 2:
        slope, icpt = np.polyfit(sizes, totals, 1)
        rslope, ricpt = np.polyfit(sizes, rss, 1)
        extrapolated = {"documents": 1_000_000, "restart_s": float(slope * 1e6 + icpt),
                        "rss_added_mb": float(rslope * 1e6 + ricpt),
                        "how": "a straight line through the measured sizes, not a measurement"}
    print_table(rows, ["documents_stored", "open_qdrant_s", "namespaces_s", "model_s", "restart_s", "rss_added_mb"])
    if extrapolated:
        print(f"extrapolated to 1M documents (not measured): restart {extrapolated['restart_s']:.0f} s, "
              f"{extrapolated['rss_added_mb']:.0f} MiB more memory")
    write_json(args.out, {"environment": environment(torch.device("cpu")), "tenants": args.tenants,
                          "vector_dim": DIM, "rows": rows, "extrapolated_1m": extrapolated})


if __name__ == "__main__":
    main()

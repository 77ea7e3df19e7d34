"""Trie forest build time and memory per docid, for 100k and 1M docids of depth 6 and 8.

    python integration/bench/bench_trie.py [--out integration/bench/results/synthetic/kernels/trie-cpu.json]

The build is vectorised numpy on the host; memory is the forest's arrays (device arrays: row_ptr,
child_token, live; plus the host's leaf bitmap).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from common import environment, percentile, print_table, synthetic_docids, timed, write_json

from genret.decoding.trie import build_forest

# (docids, depth, branching): depth 8 uses base 6 (1.68M codes), depth 6 base 10 (1M codes: complete at 1M)
SETS = [(100_000, 6, 10), (100_000, 8, 6), (1_000_000, 6, 10), (1_000_000, 8, 6)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default="integration/bench/results/synthetic/kernels/trie-cpu.json")
    args = p.parse_args()
    rows = []
    for n, depth, branching in SETS:
        toks = synthetic_docids(n, depth, branching)
        tenant = np.zeros(n, dtype=np.int64)
        times = timed(lambda t=toks, ten=tenant: build_forest(["t"], ten, t), torch.device("cpu"), args.repeats)
        forest, _ = build_forest(["t"], tenant, toks)
        rows.append({"docids": n, "depth": depth, "branching": branching, "nodes": forest.num_nodes,
                     "build_s_p50": percentile(times, 50), "build_s_max": max(times),
                     "device_bytes_per_docid": forest.device_nbytes() / n, "bytes_per_docid": forest.nbytes() / n,
                     "token_dtype": str(forest.child_token.dtype)})
    print_table(rows, ["docids", "depth", "branching", "nodes", "build_s_p50", "build_s_max",
                       "device_bytes_per_docid", "bytes_per_docid", "token_dtype"])
    write_json(args.out, {"benchmark": "trie_build", "environment": environment(torch.device("cpu")), "rows": rows})


if __name__ == "__main__":
    main()

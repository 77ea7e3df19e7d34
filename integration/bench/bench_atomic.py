"""The first step of atomic docids at scale against a dense brute-force search of the same vectors.

    python integration/bench/bench_atomic.py [--device cuda] [--docs 1000000] [--dim 384] [--before DIR] \
        [--out integration/bench/results/synthetic/atomic/atomic-<device>.json]

An embedding-seeded atomic index gives each document one docid token whose output row starts at the
document's vector, so its first decoding step is one logit per document for each beam at the root: a
``--docs``-wide row. Here the rows are the document vectors themselves (random unit vectors; values do
not change the cost; bf16 on CUDA, fp32 on a CPU) and one forest holds every document under one root.
Per batch of queries (beam ``--beam``, one live beam per query at the root, as decoding starts):
  dense           query vectors @ document vectors.T, top ``--beam`` per query (brute force)
  vocab/<be>      the decoder's step as served: logits for every beam row, the constrained step
  children/<be>   logits only for the root's live children, the constrained step
<be>: auto, as serving runs it (Triton on CUDA up to its widest node; the root here is wider, so torch).
Reported: median milliseconds per step and its ratio to dense; whether the step's top docids equal dense's.
``--before DIR`` (a directory holding an earlier build of the ``genret`` package) times that build's
steps first, in a process of its own on the same machine, as variants named ``before <variant>``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import columns, environment, percentile, print_table, timed_or_failed, write_json

from genret.decoding.model import DocidHead
from genret.decoding.trie import DeviceForest, build_forest
from genret.docids import EOS
from genret.kernels import trie_beam_step, trie_beam_step_children

FIRST_TOKEN = 2  # docid tokens start after PAD and EOS


def document_vectors(n: int, dim: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    g = torch.Generator(device="cpu").manual_seed(0)
    out = torch.empty((n, dim), dtype=dtype, device=device)
    for lo in range(0, n, 262144):  # in chunks: no fp32 copy of the whole matrix on the host
        part = torch.randn((min(n, lo + 262144) - lo, dim), generator=g)
        out[lo : lo + len(part)] = torch.nn.functional.normalize(part, dim=1).to(device=device, dtype=dtype)
    return out


def step_variants(batch: int, beams: int, head: DocidHead, docs: torch.Tensor, d: DeviceForest,
                  backends: list[str]) -> dict[str, Callable[[], Any]]:
    """Each variant's first step for ``batch`` random query vectors."""
    device, dim = docs.device, docs.shape[1]
    g = torch.Generator(device="cpu").manual_seed(batch)
    queries = torch.nn.functional.normalize(torch.randn((batch, dim), generator=g), dim=1)
    queries = queries.to(device=device, dtype=docs.dtype)
    feats = queries.repeat_interleave(beams, dim=0)  # (batch * beams, dim): every beam row of a query
    scores = torch.full((batch, beams), float("-inf"), device=device)
    scores[:, 0] = 0.0  # one live beam per query, at the root
    scores = scores.view(-1)
    nodes = torch.zeros(batch * beams, dtype=torch.long, device=device)
    done = torch.zeros(batch * beams, dtype=torch.bool, device=device)

    def dense() -> torch.Tensor:
        return torch.topk((queries @ docs.T).float(), beams, dim=1).indices

    def vocab(be: str) -> Callable[[], Any]:
        return lambda: trie_beam_step(head.logits(feats), scores, nodes, done, d.row_ptr, d.child_token, d.live,
                                      d.num_roots, d.max_children, beams, beams, backend=be)

    def children(be: str) -> Callable[[], Any]:
        return lambda: trie_beam_step_children(feats, head.weight, None, scores, nodes, done, d.row_ptr,
                                               d.child_token, d.live, d.num_roots, d.max_children, beams, beams,
                                               backend=be)

    out: dict[str, Callable[[], Any]] = {"dense": dense}
    for be in backends:
        out |= {f"vocab/{be}": vocab(be), f"children/{be}": children(be)}
    return out


def earlier_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    """This benchmark's rows for the build in ``args.before``, run in its own process."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "before.json")
        cmd = [sys.executable, __file__, "--device", args.device, "--docs", str(args.docs), "--dim", str(args.dim),
               "--beam", str(args.beam), "--batches", args.batches, "--repeats", str(args.repeats), "--out", out]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([args.before, os.environ.get("PYTHONPATH", "")])}
        subprocess.run(cmd, env=env, check=True)
        rows: list[dict[str, Any]] = json.loads(Path(out).read_text())["rows"]
        return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--docs", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=384)
    p.add_argument("--beam", type=int, default=20)
    p.add_argument("--batches", default="1,32,128")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--before", default="", help="directory holding an earlier build of the genret package")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    before = earlier_rows(args) if args.before else []
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    n, beams = args.docs, args.beam
    tokens = np.stack([np.arange(FIRST_TOKEN, FIRST_TOKEN + n), np.full(n, EOS)], axis=1)
    forest, _ = build_forest(["t"], np.zeros(n, dtype=np.int64), tokens)
    d = forest.to_device(device)
    docs = document_vectors(n, args.dim, device, dtype)
    weight = torch.cat([torch.zeros((FIRST_TOKEN, args.dim), dtype=dtype, device=device), docs])  # PAD, EOS rows
    head = DocidHead(weight, None)
    backends = ["auto"]  # what serving runs: Triton on CUDA up to its widest node, else the torch op
    rows_out: list[dict[str, Any]] = []
    for batch in (int(b) for b in args.batches.split(",")):
        variants = step_variants(batch, beams, head, docs, d, backends)
        result: dict[str, Any] = {"docs": n, "dim": args.dim, "batch": batch, "beam": beams}
        want = variants["dense"]().cpu().numpy()
        for name, fn in variants.items():
            t = timed_or_failed(fn, device, args.repeats, warmup=2)
            if isinstance(t, str):
                result[f"{name} error"] = t
                continue
            result[f"{name} ms"] = percentile(t, 50) * 1e3
            if name != "dense":
                got = fn().tokens.cpu().numpy() - FIRST_TOKEN  # docid token -> document row
                result[f"{name} x dense"] = result[f"{name} ms"] / result["dense ms"]
                result[f"{name} same top-{beams}"] = float(np.mean([set(got[b]) == set(want[b])
                                                                   for b in range(batch)]))
            print(f"  batch {batch} {name}: {result[f'{name} ms']}", flush=True)
        for old in before:
            if old["batch"] == batch:
                result |= {f"before {k}": v for k, v in old.items() if k.endswith((" ms", " error")) and k != "dense ms"}
        rows_out.append(result)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    wanted = ["docs", "batch", *[c for suffix in (" ms", "x dense", " error") for c in columns(rows_out, suffix)]]
    table = print_table(rows_out, wanted)
    agree = print_table(rows_out, ["docs", "batch", *columns(rows_out, f"same top-{beams}")])
    out = args.out or f"integration/bench/results/synthetic/atomic/atomic-{device.type}.json"
    write_json(out, {"benchmark": "atomic_first_step", "environment": environment(device), "docs": n,
                     "dim": args.dim, "beam": beams, "dtype": str(dtype), "unit": "milliseconds per step (median)",
                     "rows": rows_out, "tables": {"latency": table, "agreement": agree}})


if __name__ == "__main__":
    main()

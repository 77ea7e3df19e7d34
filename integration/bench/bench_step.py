"""One constrained beam step, in isolation: the trie's cost next to an unconstrained step.

    python integration/bench/bench_step.py [--device cuda] [--out results/synthetic/kernels/step-<device>.json]

Every variant starts from decoder features (rows, hidden) and an output embedding (vocab, hidden):
  free            logits for the whole vocabulary, log_softmax, top-k across each query's beams (no trie)
  vocab/<be>      the same logits, then the fused trie step (restrict to live children, log_softmax over
                  the vocabulary, top-k per row, selection across beams)
  children/<be>   logits only for each row's live children (log_softmax over them), then the same top-k
<be> is the kernel backend: torch (the reference: vectorised gathers over the CSR) or triton (CUDA only;
on a CPU the Triton kernels run only in the interpreter, which is not timed).
Beams sit at random nodes of one depth of a trie of synthetic docids.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import numpy as np
import torch
from common import (
    columns,
    decode_args,
    docid_sets,
    environment,
    percentile,
    print_table,
    synthetic_docids,
    timed_or_failed,
    write_json,
)

from genret.decoding.beam import free_step
from genret.decoding.model import DocidHead
from genret.decoding.trie import DeviceForest, TrieForest, build_forest
from genret.kernels import trie_beam_step, trie_beam_step_children


def nodes_at_depth(forest: TrieForest, depth: int) -> np.ndarray:
    lo = hi = 0  # one tenant: root 0
    for _ in range(depth):
        first, last = int(forest.row_ptr[lo]), int(forest.row_ptr[hi + 1])
        lo, hi = first + forest.num_roots, last - 1 + forest.num_roots
    return np.arange(lo, hi + 1)


def variants(head: DocidHead, d: DeviceForest, beams: int, cuda: bool) -> dict[str, Callable[..., object]]:
    def free(feats, scores, nodes, done):  # type: ignore[no-untyped-def]
        return free_step(head, feats, scores, done, beams)

    def vocab(backend: str) -> Callable[..., object]:
        def run(feats, scores, nodes, done):  # type: ignore[no-untyped-def]
            return trie_beam_step(head.logits(feats), scores, nodes, done, d.row_ptr, d.child_token, d.live,
                                  d.num_roots, d.max_children, beams, beams, backend=backend)
        return run

    def children(backend: str) -> Callable[..., object]:
        def run(feats, scores, nodes, done):  # type: ignore[no-untyped-def]
            return trie_beam_step_children(feats, head.weight, head.bias, scores, nodes, done, d.row_ptr,
                                           d.child_token, d.live, d.num_roots, d.max_children, beams, beams,
                                           backend=backend)
        return run

    out: dict[str, Callable[..., object]] = {"free": free, "vocab/torch": vocab("torch"),
                                             "children/torch": children("torch")}
    if cuda:
        out |= {"vocab/triton": vocab("triton"), "children/triton": children("triton")}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    decode_args(p)
    p.add_argument("--vocab", default="256,32128")
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    rows_out = []
    for n, depth, branching in docid_sets(args.docids):
        forest, _ = build_forest(["t"], np.zeros(n, dtype=np.int64), synthetic_docids(n, depth, branching))
        d = forest.to_device(device)
        level = nodes_at_depth(forest, depth // 2)
        for vocab in (int(v) for v in args.vocab.split(",")):
            head = DocidHead(torch.randn(vocab, args.hidden, device=device) / args.hidden**0.5, None)
            for batch in (int(b) for b in args.batches.split(",")):
                rows = batch * args.beam
                rng = np.random.default_rng(batch)
                nodes = torch.as_tensor(rng.choice(level, rows), device=device)
                scores = torch.as_tensor(-rng.random(rows), dtype=torch.float32, device=device)
                done = torch.zeros(rows, dtype=torch.bool, device=device)
                feats = torch.randn(rows, args.hidden, device=device)
                result = {"docids": n, "depth": depth, "vocab": vocab, "batch": batch, "beam": args.beam}
                for name, fn in variants(head, d, args.beam, device.type == "cuda").items():
                    inputs = (feats, scores, nodes, done)
                    t = timed_or_failed(lambda f=fn, x=inputs: f(*x), device, args.repeats, warmup=2)
                    if isinstance(t, str):
                        result[f"{name} error"] = t
                        continue
                    result[f"{name} ms"] = percentile(t, 50) * 1e3
                rows_out.append(result)
                print(result, flush=True)
    names = columns(rows_out, " ms")
    table = print_table(rows_out, ["docids", "depth", "vocab", "batch", *names])
    out = args.out or f"integration/bench/results/synthetic/kernels/step-{device.type}.json"
    write_json(out, {"benchmark": "constrained_step", "environment": environment(device), "beam": args.beam,
                     "hidden": args.hidden, "unit": "milliseconds per step (median)", "rows": rows_out,
                     "table": table})


if __name__ == "__main__":
    main()

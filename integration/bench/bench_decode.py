"""End-to-end constrained decoding: ours against Hugging Face ``generate``, one process, one device.

    python integration/bench/bench_decode.py [--device cuda] [--out results/synthetic/decode/decode-<dev>.json]

Model: T5-small shape (6+6 layers, d_model 512, 8 heads, d_ff 2048, vocabulary 32,128), random weights
(timing does not depend on training; bf16 on CUDA, fp32 on CPU). Docid tokens are T5 tokens 2.. and EOS
is T5's EOS, so every variant scores the same sequences. Queries: Cranfield queries (MiniLM tokenizer).
Variants, each decoding the same queries with beam ``--beam`` to full docid depth:
  hf-prefix        generate(..., prefix_allowed_tokens_fn) over a dict trie (how research code decodes)
  hf-free          generate(...) unconstrained
  ours-free        our loop (encoder once, KV cache, one step op per token) with no trie
  ours-vocab/<be>  our loop, trie step on full-vocabulary logits: HF's scores, backend torch or triton
  ours-children/<be>  our loop, logits only for the allowed children (log_softmax over them)
  ours-graph-vocab/triton, ours-graph-children/triton  (CUDA only) the same loop captured once as a CUDA
                   graph and replayed (``genret.decoding.graphs``); the encoder runs before each replay
<be>: torch (the reference: vectorised gathers over the CSR) or triton (CUDA only).
Reported per batch size: queries/s, p50/p99 latency of one batch, and the trie's share of the loop's time
(1 - time(ours-free) / time(variant)).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from common import (
    columns,
    decode_args,
    docid_sets,
    environment,
    percentile,
    print_table,
    sync,
    synthetic_docids,
    timed_or_failed,
    write_json,
)
from transformers import AutoTokenizer, T5Config, T5ForConditionalGeneration

from genret.config import force_offline
from genret.data.beir import demo_corpus_path
from genret.data.embed import minilm_path
from genret.data.index_dir import ModelSpec
from genret.decoding.beam import BeamResult, Trie, constrained_beam_search, unconstrained_beam_search
from genret.decoding.graphs import GraphedDecode
from genret.decoding.model import HFSeq2SeqBackend
from genret.decoding.trie import DeviceForest, build_forest

EOS = 1


def t5_small(device: torch.device, seed: int = 0) -> T5ForConditionalGeneration:
    torch.manual_seed(seed)
    cfg = T5Config(vocab_size=32128, d_model=512, d_kv=64, d_ff=2048, num_layers=6, num_decoder_layers=6,
                   num_heads=8, decoder_start_token_id=0, pad_token_id=0, eos_token_id=EOS)
    model = T5ForConditionalGeneration(cfg)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    return model.to(device=device, dtype=dtype).eval()


def dict_trie(tokens: np.ndarray) -> dict[int, Any]:
    """Nested dicts token -> subtree, as research code builds them."""
    root: dict[int, Any] = {}
    for row in tokens.tolist():
        node = root
        for t in row:
            node = node.setdefault(t, {})
    return root


def prefix_fn(trie: dict[int, Any]) -> Callable[[int, torch.Tensor], list[int]]:
    def allowed(_batch_id: int, sent: torch.Tensor) -> list[int]:
        node = trie
        for t in sent.tolist()[1:]:  # skip the decoder start token
            node = node.get(t)
            if node is None:
                return [EOS]
        return list(node) or [EOS]

    return allowed


def queries(n: int) -> list[str]:
    lines = (demo_corpus_path() / "queries.jsonl").read_text().splitlines()
    texts = [json.loads(x)["text"] for x in lines]
    return [texts[i % len(texts)] for i in range(n)]


def make_variants(model: T5ForConditionalGeneration, backend: HFSeq2SeqBackend, enc_in: dict[str, torch.Tensor],
                  texts: list[str], forest: DeviceForest, depth: int, allowed: Callable[[int, torch.Tensor], list[int]],
                  beam: int, kernel_backends: list[str]) -> dict[str, Callable[[], Any]]:
    """Each variant decodes the same queries to full docid depth."""
    tries = [Trie(forest)] * len(texts)

    def hf(constrained: bool) -> Callable[[], Any]:
        def run() -> Any:
            with torch.inference_mode():
                return model.generate(**enc_in, num_beams=beam, num_return_sequences=beam, max_new_tokens=depth + 1,
                                      do_sample=False, prefix_allowed_tokens_fn=allowed if constrained else None)
        return run

    def ours(kb: str, scoring: str) -> Callable[[], Any]:
        return lambda: constrained_beam_search(backend, backend.encode(texts), tries, beam,
                                               kernel_backend=kb, scoring=scoring)

    def graphed(kb: str, scoring: str) -> Callable[[], Any]:
        held: list[GraphedDecode] = []  # captured at the first call (the warm-up), replayed after

        def run() -> BeamResult:
            enc = backend.encode(texts)
            if not held:
                held.append(GraphedDecode(backend, enc, tries, beam, kb, scoring))
            return held[0](enc)
        return run

    out: dict[str, Callable[[], Any]] = {
        "hf-prefix": hf(True), "hf-free": hf(False),
        "ours-free": lambda: unconstrained_beam_search(backend, backend.encode(texts), beam, depth + 1)}
    for kb in kernel_backends:
        out[f"ours-vocab/{kb}"] = ours(kb, "vocab")
        out[f"ours-children/{kb}"] = ours(kb, "children")
    if "triton" in kernel_backends:
        out["ours-graph-vocab/triton"] = graphed("triton", "vocab")
        out["ours-graph-children/triton"] = graphed("triton", "children")
    return out


def profiled(fn: Callable[[], Any], device: torch.device, rows: int = 18) -> str:
    """One call under the torch profiler: the ops by total device time (host time on a CPU), and the
    whole call's wall time beside the device's busy time."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    fn()
    sync(device)
    with profile(activities=activities) as prof:
        t0 = time.perf_counter()
        fn()
        sync(device)
        wall = time.perf_counter() - t0
    events = prof.key_averages()
    key = "device_time_total" if device.type == "cuda" else "cpu_time_total"
    busy = sum(e.self_device_time_total for e in events) / 1e3 if device.type == "cuda" else float("nan")
    head = f"wall {wall * 1e3:.2f} ms, device busy {busy:.2f} ms (sum of kernel times)\n"
    return head + events.table(sort_by=key, row_limit=rows, max_name_column_width=60)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    decode_args(p)
    p.add_argument("--repeats", default="1:10,32:3,128:2", help="batch:timed repeats")
    p.add_argument("--skip", default="", help="comma-separated variants to skip")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--profile", default="", help="comma-separated variants to profile once per row "
                   "(torch profiler: the ops taking the most device and host time)")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    force_offline()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    repeats = {int(k): int(v) for k, v in (x.split(":") for x in args.repeats.split(","))}
    skip = set(filter(None, args.skip.split(",")))
    model = t5_small(device)
    tok = AutoTokenizer.from_pretrained(str(minilm_path()))
    spec = ModelSpec("checkpoint", "t5-small-shape", token_offset=0, start_token=0, docid_vocab=32128)
    backend = HFSeq2SeqBackend(model, tok, spec, device)
    kernel_backends = ["torch", "triton"] if device.type == "cuda" else ["torch"]
    rows_out: list[dict[str, Any]] = []
    profiles: dict[str, str] = {}
    for n, depth, branching in docid_sets(args.docids):
        docids = synthetic_docids(n, depth, branching)
        t0 = time.perf_counter()
        forest, order = build_forest(["t"], np.zeros(n, dtype=np.int64), docids)
        build_s = time.perf_counter() - t0
        d = forest.to_device(device)
        t0 = time.perf_counter()
        allowed = prefix_fn(dict_trie(docids))
        dict_s = time.perf_counter() - t0
        print(f"{n} docids depth {depth}: forest {build_s:.2f}s, dict trie {dict_s:.2f}s", flush=True)
        for batch in (int(b) for b in args.batches.split(",")):
            texts = queries(batch)
            enc = tok(texts, padding=True, truncation=True, max_length=64, return_tensors="pt").to(device)
            enc_in = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

            variants = make_variants(model, backend, enc_in, texts, d, depth, allowed, args.beam, kernel_backends)
            result: dict[str, Any] = {"docids": n, "depth": depth, "batch": batch, "beam": args.beam}
            times: dict[str, list[float]] = {}
            for name, fn in variants.items():
                if name in skip:
                    continue
                warm = 1 if batch <= 32 or "graph" in name else 0
                t = timed_or_failed(fn, device, repeats.get(batch, 3), warmup=warm)
                if isinstance(t, str):
                    result[f"{name} error"] = t
                    print(f"  batch {batch} {name}: {t}", flush=True)
                    continue
                times[name] = t
                result[f"{name} q/s"] = batch / float(np.mean(times[name]))
                result[f"{name} p50 ms"] = percentile(times[name], 50) * 1e3
                result[f"{name} p99 ms"] = percentile(times[name], 99) * 1e3
                print(f"  batch {batch} {name}: {percentile(times[name], 50):.3f}s", flush=True)
            if "ours-free" in times:
                free = float(np.median(times["ours-free"]))
                for name in times:
                    if name.startswith("ours-") and name != "ours-free":
                        result[f"{name} trie share"] = 1.0 - free / float(np.median(times[name]))
            # Same answers: our vocab scoring is HF's; the top docid should match generate's best sequence.
            check = f"ours-vocab/{kernel_backends[-1]}"
            if "hf-prefix" in times and check in times and batch <= 32:
                res = variants[check]()
                top = order[forest.leaf_rank(res.leaves[:, 0].cpu().numpy())]
                seqs = variants["hf-prefix"]()[:, 1:].view(batch, args.beam, -1)[:, 0, : depth + 1].cpu().numpy()
                result["top1 agrees with hf-prefix"] = float(np.mean([
                    np.array_equal(seqs[b], docids[top[b]]) for b in range(batch)]))
            for name in filter(None, args.profile.split(",")):
                if name in times:
                    try:
                        profiles[f"{n} docids, batch {batch}, {name}"] = profiled(variants[name], device)
                    except Exception as e:  # noqa: BLE001 - a profiler failure must not lose the timings
                        profiles[f"{n} docids, batch {batch}, {name}"] = f"profile failed: {e}"
            for scoring in ("vocab", "children"):
                graph, eager = f"ours-graph-{scoring}/triton", f"ours-{scoring}/triton"
                if graph in times and eager in times:
                    result[f"{graph} equals eager"] = float(torch.equal(variants[graph]().leaves,
                                                                        variants[eager]().leaves))
            rows_out.append(result)
    for title, text in profiles.items():
        print(f"profile: {title}\n{text}", flush=True)
    cols = ["docids", "depth", "batch"]
    names = [k[: -len(" q/s")] for k in columns(rows_out, " q/s")]
    table_qps = print_table(rows_out, cols + [f"{v} q/s" for v in names])
    table_lat = print_table(rows_out, cols + [f"{v} p50 ms" for v in names] + [f"{v} p99 ms" for v in names])
    share_cols, agree_cols = columns(rows_out, "trie share"), columns(rows_out, "equals eager")
    table_share = print_table(rows_out, cols + share_cols + ["top1 agrees with hf-prefix", *agree_cols])
    out = args.out or f"integration/bench/results/synthetic/decode/decode-{device.type}.json"
    write_json(out, {"benchmark": "constrained_decode", "environment": environment(device),
                     "model": "T5-small shape, random weights", "beam": args.beam, "rows": rows_out,
                     "tables": {"queries_per_s": table_qps, "latency": table_lat, "trie_share": table_share},
                     "profiles": profiles})


if __name__ == "__main__":
    main()

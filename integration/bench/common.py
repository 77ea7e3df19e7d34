"""What every benchmark script shares: synthetic docids, timing, the environment record, table and JSON."""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genret.docids import EOS


def synthetic_docids(n: int, depth: int, branching: int, seed: int = 0) -> np.ndarray:
    """``n`` distinct docids of ``depth`` digits in base ``branching`` (tokens 2..branching+1), EOS-ended.

    Drawn uniformly without replacement from all branching**depth codes: n = branching**depth is the
    complete tree (e.g. 1M docids of 6 decimal digits).
    """
    total = branching**depth
    if n > total:
        raise ValueError(f"{n} docids do not fit {depth} digits of base {branching}")
    rng = np.random.default_rng(seed)
    codes = np.arange(total, dtype=np.int64) if n == total else rng.choice(total, n, replace=False)
    toks = np.zeros((n, depth + 1), dtype=np.int64)
    for j in range(depth - 1, -1, -1):
        toks[:, j] = 2 + codes % branching
        codes = codes // branching
    toks[:, depth] = EOS
    return toks


def docid_sets(spec: str) -> list[tuple[int, int, int]]:
    """``"n:depth:branching,..."`` -> [(n, depth, branching)] (the benchmarks' ``--docids`` flag)."""
    out = []
    for part in spec.split(","):
        n, depth, branching = (int(x) for x in part.split(":"))
        out.append((n, depth, branching))
    return out


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device, repeats: int, warmup: int = 1) -> list[float]:
    """Wall seconds of ``repeats`` calls after ``warmup`` untimed ones, synchronising the device."""
    for _ in range(warmup):
        fn()
    sync(device)
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync(device)
        out.append(time.perf_counter() - t0)
    return out


def timed_or_failed(fn: Callable[[], Any], device: torch.device, repeats: int,
                    warmup: int = 1) -> list[float] | str:
    """``timed``, or the error a variant raised (its type and first line), so that one failing variant
    (a kernel that does not compile, memory run out) does not lose the other variants' figures."""
    try:
        return timed(fn, device, repeats, warmup)
    except Exception as e:  # noqa: BLE001 - reported in the results, not hidden
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:200]}"


def columns(rows: Sequence[dict[str, Any]], suffix: str) -> list[str]:
    """Every key ending in ``suffix`` across ``rows``, in first-seen order (rows may lack a variant)."""
    return list(dict.fromkeys(k for r in rows for k in r if k.endswith(suffix)))


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads)"


def environment(device: torch.device) -> dict[str, Any]:
    versions: dict[str, str | None] = {}
    for pkg in ("genret", "torch", "triton", "transformers", "numpy"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    out = {"device": device_name(device), "device_type": device.type, "python": platform.python_version(),
           "versions": versions, "triton_interpret": os.environ.get("TRITON_INTERPRET") == "1",
           "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if device.type == "cuda":
        out |= {"cuda": torch.version.cuda, "driver": gpu_driver()}
    return out


def gpu_driver() -> str | None:
    """The NVIDIA driver's version as ``nvidia-smi`` reports it; None where it cannot be read."""
    try:
        run = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = run.stdout.strip().splitlines()
    return lines[0].strip() if run.returncode == 0 and lines else None


def print_table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    def fmt(v: Any) -> str:
        return f"{v:.3g}" if isinstance(v, float) else str(v)

    cells = [[fmt(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) if cells else len(c) for i, c in enumerate(columns)]
    lines = [" | ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)),
             "-|-".join("-" * w for w in widths)]
    lines += [" | ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    text = "\n".join(lines)
    print(text, flush=True)
    return text


def write_json(path: str | Path, payload: dict[str, Any]) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {path}", flush=True)


def decode_args(p: argparse.ArgumentParser) -> None:
    """The decoding benchmarks' shared flags: device, docid sets, batch sizes, beam width."""
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--docids", default="100000:8:6,1000000:6:10", help="n:depth:branching,...")
    p.add_argument("--batches", default="1,32,128")
    p.add_argument("--beam", type=int, default=20)


def collection_args(p: argparse.ArgumentParser) -> None:
    """A BEIR collection and the split whose judged queries are used."""
    p.add_argument("--data", required=True, help="BEIR folder (corpus.jsonl, queries.jsonl, qrels/)")
    p.add_argument("--split", default="test")


def tenant_args(p: argparse.ArgumentParser) -> None:
    """The embedded Qdrant, collection and tenant a benchmark reads."""
    p.add_argument("--qdrant-path", required=True)
    p.add_argument("--collection", required=True)
    p.add_argument("--tenant", required=True)


def docid_args(p: argparse.ArgumentParser) -> None:
    """How the benchmark's indexes assign docids (as ``genret index`` does)."""
    p.add_argument("--scheme", default="semantic")
    p.add_argument("--docid-init", default="random", help="embeddings: atomic rows start at document vectors")
    p.add_argument("--freeze-docid-embeddings", action="store_true")

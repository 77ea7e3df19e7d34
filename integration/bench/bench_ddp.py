"""Training throughput in one process and in two under torchrun (DistributedDataParallel), same machine.

    python integration/bench/bench_ddp.py [--docs 400] [--epochs 1] \
        [--out integration/bench/results/cranfield/ddp/ddp-cpu.json]

The first ``--docs`` Cranfield documents are loaded into a fresh embedded collection and indexed with
the default model (atomic docids, two word windows per document) by ``genret index``, four ways: the
frozen encoder (decoder only, the demo's setting) and the whole model, each in one process on every core, in one process on
one core, and in two processes of one core each (``torchrun --nproc-per-node 2``, gloo). Reported:
training examples per second (the training loop, as ``genret index`` prints it) and the wall time of
the whole command (set-up, encoding and writing included).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from common import environment, print_table, write_json

ROOT = Path(__file__).resolve().parents[2]


def run(cmd: list[str], env: dict[str, str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{r.stderr[-3000:]}")
    return time.perf_counter() - t0, r.stdout


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--docs", type=int, default=400)
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--out", default="integration/bench/results/cranfield/ddp/ddp-cpu.json")
    args = p.parse_args()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="genret-ddp-") as tmp:
        corpus = Path(tmp) / "corpus"
        corpus.mkdir()
        lines = (ROOT / "plugin/demo_data/cranfield/corpus.jsonl").read_text().splitlines()[: args.docs]
        (corpus / "corpus.jsonl").write_text("\n".join(lines) + "\n")
        env = {**os.environ, "GENRET_QDRANT_PATH": f"{tmp}/q", "GENRET_COLLECTION": "ddp", "GENRET_DEVICE": "cpu"}
        genret = [sys.executable, "-m", "genret.cli"]
        run([*genret, "load", "--data", str(corpus), "--tenant", "t", "--no-vectors"], env)
        common = ["index", "--scheme", "atomic", "--docid-init", "random", "--max-chunks", "2", "--rehearsal", "0",
                  "--generated-queries", "0", "--epochs", str(args.epochs), "--seed", "0"]
        for frozen in (True, False):
            for procs, threads in ((1, torch.get_num_threads()), (1, 1), (2, 1)):
                index = f"{tmp}/idx-{procs}-{threads}-{int(frozen)}"
                flags = [*common, "--freeze-encoder" if frozen else "--no-freeze-encoder"]
                penv = {**env, "GENRET_INDEX_DIR": index, "OMP_NUM_THREADS": str(threads)}
                cmd = [*genret, *flags] if procs == 1 else [
                    sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(procs),
                    "-m", "genret.cli", *flags]
                wall, out = run(cmd, penv)
                m = re.search(r"(\d+) steps, ([\d.]+) examples/s, loss ([\d.]+)", out)
                assert m, out
                manifest = json.loads(Path(index, "manifest.json").read_text())
                row = {"encoder": "frozen" if frozen else "trained", "processes": procs,
                       "threads_per_process": threads, "pairs": sum(manifest["training"]["pairs"].values()),
                       "steps": int(m.group(1)), "examples_per_s": float(m.group(2)),
                       "final_loss": float(m.group(3)), "wall_s": wall}
                rows.append(row)
                print_table([row], list(row))
    for r in rows:  # against one process on every core, and against one process on one core
        same = [b for b in rows if b["encoder"] == r["encoder"] and b["processes"] == 1]
        r["speedup_vs_1_process"] = r["examples_per_s"] / same[0]["examples_per_s"]
        r["speedup_vs_1_core"] = r["examples_per_s"] / same[1]["examples_per_s"]
    print_table(rows, ["encoder", "processes", "threads_per_process", "pairs", "steps", "examples_per_s",
                       "speedup_vs_1_process", "speedup_vs_1_core", "final_loss", "wall_s"])
    write_json(args.out, {"environment": environment(torch.device("cpu")), "docs": args.docs, "epochs": args.epochs,
                          "rows": rows})


if __name__ == "__main__":
    main()

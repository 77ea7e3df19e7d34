"""What one live write costs the sidecar: a small tenant's and a big tenant's, beside many other tenants.

    python integration/bench/bench_tenancy_writes.py [--small 1000] [--docs 100] [--big 1000000]
        [--writes 200] [--big-writes 30] [--before DIR] [--before-writes 20]
        [--out integration/bench/results/synthetic/tenancy/writes-cpu.json]

The collection: ``--small`` tenants of ``--docs`` docids each plus one tenant of ``--big`` docids, synthetic
(semantic docids of 4 base-32 digits, and atomic docids). Only the sidecar's side of a write is timed:
applying the change to the namespaces and making the changed tries ready on the decoding device, as the
engine's publish step does;
Qdrant's own write is the same before and after and is measured by ``bench_tenancy.py``. Each write adds
one new docid to a tenant (an upsert) and then removes it (a delete).

``--before DIR`` runs the same writes, in the same run, against another build of genret (DIR holds its
``genret`` package, e.g. an older checkout's ``plugin/`` linked as ``genret`` beside its ``kernels/``),
where every write rebuilt the whole forest (``--before-writes`` of each kind, since each takes seconds).
The JSON also records what one compaction of the big tenant costs (its delta trie folded back into one
trie: done when the delta reaches 1% of the tenant, so about once per 10,000 writes at 1M docids).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import environment, percentile, print_table, synthetic_docids, write_json

DEPTH, BRANCHING = 4, 32


def docid_strings(scheme: str, n: int, seed: int) -> list[str]:
    if scheme == "atomic":
        return [str(i) for i in range(n)]
    toks = synthetic_docids(n, DEPTH, BRANCHING, seed)[:, :DEPTH] - 2
    return ["-".join(map(str, row)) for row in toks.tolist()]


class Sidecar:
    """The namespaces and the publish step of whichever genret build is on the path."""

    def __init__(self, scheme: str, entries: dict[str, list[tuple[str, str]]], vocab: int) -> None:
        from genret.docids import AtomicCodec, SemanticCodec

        self.atomic = scheme == "atomic"
        self.codec = AtomicCodec(vocab) if self.atomic else SemanticCodec(BRANCHING, DEPTH)
        try:  # an older build: one forest for every tenant
            from genret.namespaces import build_namespaces  # type: ignore[import-not-found]

            self.per_tenant = False
        except ImportError:  # per-tenant namespaces
            from genret.serving.engine import served_trie
            from genret.serving.namespaces import build_namespaces

            self.serve = served_trie
            self.per_tenant = True
        t0 = time.perf_counter()
        self.ns = build_namespaces(self.codec, entries)
        self.build_s = time.perf_counter() - t0
        gc.freeze()  # as the engine does once it has loaded
        self.device = torch.device("cpu")

    def write(self, tenant: str, added: list[tuple[str, str]], removed: list[str]) -> float:
        """Seconds to apply one change and publish the new snapshot, as the engine does."""
        t0 = time.perf_counter()
        if self.per_tenant:
            self.ns = self.ns.apply(self.codec, tenant, added, removed)
            mine = self.ns.get(tenant)
            if mine is not None:
                self.serve(mine, self.device, self.atomic)
        else:
            self.ns = self.ns.apply(self.codec, [(tenant, p, d) for p, d in added], {tenant: removed} if removed else {})
            self.ns.forest.to_device(self.device)
            if self.atomic:
                torch.from_numpy(self.ns.token_owner(self.codec.vocab_size)).to(self.device)
        return time.perf_counter() - t0


def worker(args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(0)
    total = args.small * args.docs + args.big
    spare = args.writes + args.big_writes
    every = docid_strings(args.scheme, total + spare if args.scheme == "atomic" else BRANCHING**DEPTH, seed=1)
    entries: dict[str, list[tuple[str, str]]] = {}
    if args.scheme == "atomic":  # one token per document: tenants hold disjoint numbers
        pos = 0
        for t in range(args.small):
            entries[f"t{t}"] = [(f"t{t}:{i}", every[pos + i]) for i in range(args.docs)]
            pos += args.docs
        entries["big"] = [(f"big:{i}", every[pos + i]) for i in range(args.big)]
        fresh = every[total:]
    else:  # codes live in each tenant's own namespace
        small_codes = rng.sample(range(len(every)), args.docs + spare)
        for t in range(args.small):
            entries[f"t{t}"] = [(f"t{t}:{i}", every[c]) for i, c in enumerate(small_codes[: args.docs])]
        big_codes = list(range(len(every)))
        rng.shuffle(big_codes)
        entries["big"] = [(f"big:{i}", every[c]) for i, c in enumerate(big_codes[: args.big])]
        fresh_small = [every[c] for c in small_codes[args.docs:]]
        fresh_big = [every[c] for c in big_codes[args.big: args.big + spare]]
    side = Sidecar(args.scheme, entries, total + spare)
    out: dict[str, Any] = {"per_tenant": side.per_tenant, "build_s": side.build_s}
    for who, count in (("small", args.writes), ("big", args.big_writes)):
        ups, dels = [], []
        for i in range(count):
            tenant = "big" if who == "big" else f"t{rng.randrange(args.small)}"
            if args.scheme == "atomic":
                docid = fresh[i if who == "small" else args.writes + i]
            else:
                docid = (fresh_small if who == "small" else fresh_big)[i]
            pid = f"{tenant}:new{i}"
            ups.append(side.write(tenant, [(pid, docid)], []))
            dels.append(side.write(tenant, [], [pid]))
        out[who] = {"upsert_ms": [x * 1e3 for x in ups], "delete_ms": [x * 1e3 for x in dels]}
    if side.per_tenant:  # what folding the big tenant's delta trie back into one trie costs, once
        big = side.ns.get("big")
        t0 = time.perf_counter()
        side.serve(big.rebuilt(side.codec), side.device, side.atomic)
        out["compaction_ms"] = (time.perf_counter() - t0) * 1e3
    return out


def run_worker(args: argparse.Namespace, scheme: str, pythonpath: str | None) -> dict[str, Any]:
    writes = args.writes if pythonpath is None else args.before_writes
    big_writes = args.big_writes if pythonpath is None else min(args.big_writes, args.before_writes)
    cmd = [sys.executable, __file__, "--worker", "--scheme", scheme, "--small", str(args.small), "--docs",
           str(args.docs), "--big", str(args.big), "--writes", str(writes), "--big-writes", str(big_writes)]
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (pythonpath, env.get("PYTHONPATH")) if p)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--small", type=int, default=1000)
    ap.add_argument("--docs", type=int, default=100)
    ap.add_argument("--big", type=int, default=1_000_000)
    ap.add_argument("--writes", type=int, default=200)
    ap.add_argument("--big-writes", type=int, default=30)
    ap.add_argument("--before-writes", type=int, default=20,
                    help="writes per tenant kind for --before (each rebuilds every tenant's trie there)")
    ap.add_argument("--schemes", default="semantic,atomic")
    ap.add_argument("--scheme", default="semantic")
    ap.add_argument("--before", help="directory on PYTHONPATH that holds an older genret build")
    ap.add_argument("--out", default="integration/bench/results/synthetic/tenancy/writes-cpu.json")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return
    builds = {"after": None} | ({"before": args.before} if args.before else {})
    rows, raw = [], {}
    for scheme in args.schemes.split(","):
        for build, path in builds.items():
            res = run_worker(args, scheme, path)
            raw[f"{scheme}/{build}"] = res
            for who in ("small", "big"):
                for op in ("upsert", "delete"):
                    ms = res[who][f"{op}_ms"]
                    rows.append({"scheme": scheme, "build": build, "tenant": who, "write": op,
                                 "p50_ms": percentile(ms, 50), "p99_ms": percentile(ms, 99), "n": len(ms)})
    columns = ["scheme", "build", "tenant", "write", "p50_ms", "p99_ms", "n"]
    table = print_table(rows, columns)
    write_json(Path(args.out), {"benchmark": "tenancy_writes", "environment": environment(torch.device("cpu")),
                                "settings": {k: getattr(args, k) for k in ("small", "docs", "big", "writes",
                                                                           "big_writes", "before_writes", "schemes",
                                                                           "before")},
                                "rows": rows, "table": table,
                                "build_s": {k: v["build_s"] for k, v in raw.items()},
                                "compaction_ms": {k: v["compaction_ms"] for k, v in raw.items() if "compaction_ms" in v}})


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()

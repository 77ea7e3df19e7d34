"""Fair service between tenants: what tenant B sees while tenant A floods the sidecar, reads and writes.

    python integration/bench/bench_fairness.py [--seconds 45] [--before DIR] [--kinds reads,writes,hybrid]
        [--out ...fairness-cpu.json]

Setup: the bundled Cranfield corpus split between tenants A and B (700 documents each, MiniLM vectors) in
an embedded Qdrant collection; semantic docids (base 10) in the payloads; the default model (MiniLM
encoder, 3-layer decoder, untrained: decoding cost, not quality, is measured); ``genret serve`` in its own
process, clients in this one, over gRPC on 127.0.0.1.

Each phase runs ``--seconds``:
  reads     B: 2 clients x 2 searches/s, taking turns (generative, top 10, beam 20), alone, then while A's 32
            or 64 clients search back to back (a refused call, RESOURCE_EXHAUSTED, is retried after 5 ms);
  feedback  B as in reads, alone, then while A's 32 clients search back to back, without and with
            pseudo-relevance feedback (``feedback=1``: a second encoder pass and its candidates scored
            again); run it without ``--before`` against a build that predates the field;
  writes    B: 2 clients x 1 write/s, taking turns (upsert one new document, then delete it; each call timed), alone, then
            while A's 32 or 64 clients upsert and delete 8 documents back to back, or 4 clients write at the
            per-call size limit (40 documents of 95,000 characters);
  hybrid    B: 2 clients x 2 HYBRID searches/s (RRF, so the lexical list too), taking turns, after A's one
            HYBRID search has built A's lexical index, then while A's 16 clients each upsert a document,
            search HYBRID, delete it and search HYBRID again, back to back (a build that drops a
            tenant's index on each write rebuilds A's for each of A's searches; one that changes it in
            place does not), and the same without A's lexical list;
  lexical-writes  B as in hybrid, alone, then while A's 4 clients write at the per-call size limit (as in
            writes) with A's lexical index held (a build that changes it in place indexes each write's
            4 MB of text; one that drops it does not).
In hybrid and lexical-writes the server may hold ``--lexical-docs`` documents of lexical index: this build
reads it as a limit per tenant, the ``--before`` build as the setting ``--before-lexical-setting`` names.
The baseline is B alone, in the same run on the same machine. ``--before DIR`` (a directory holding
another build of the ``genret`` package, e.g. ``git archive`` of an earlier commit with ``plugin/`` as
``genret/`` and its kernels folder, ``kernels/`` or, in later versions, ``kernels/ops/``, as
``genret/kernels/``) runs every phase against that build's server too, on
the same collection and index. A's clients run in a process of their own.
Target: B's p99 with A flooding <= 2x B's p99 alone.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import itertools
import json
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import torch
from common import environment, percentile, print_table, write_json

from genret.config import Config, force_offline
from genret.data.beir import demo_corpus_path, load_corpus, load_queries
from genret.data.embed import EMBED_DIM, TextEncoder
from genret.data.index_dir import DOCIDS, MODEL_DIR, Manifest, write_manifest
from genret.docids import SemanticCodec
from genret.indexing.models import build_default_model
from genret.store import QdrantStore
from genret.v1 import genret_pb2 as pb
from genret.v1 import genret_pb2_grpc as pb_grpc

A, B = "A", "B"
PER_TENANT = 700
LARGE_TEXT = ("wing flutter shock boundary layer heat transfer pressure laminar turbulent " * 1300)[:95_000]


def docid(i: int) -> str:
    return "-".join(str(i // 10**k % 10) for k in (2, 1, 0))


def make_collection(tmp: Path) -> Config:
    """The collection (two tenants, vectors, docids) and an index directory with an untrained default model."""
    cfg = Config(qdrant_path=str(tmp / "q"), collection="fair", index_dir=str(tmp / "idx"), device="cpu")
    docs = load_corpus(demo_corpus_path())[: 2 * PER_TENANT]
    vectors = TextEncoder().encode([f"{d.title}. {d.text}" for d in docs])
    store = QdrantStore(cfg)
    store.ensure_collection(EMBED_DIM)
    records = []
    for t, part in ((A, slice(0, PER_TENANT)), (B, slice(PER_TENANT, 2 * PER_TENANT))):
        chunk = docs[part]
        ids = store.upsert_documents(t, [(d.doc_id, d.title, d.text) for d in chunk], vectors[part],
                                     docids=[docid(i) for i in range(len(chunk))])
        records += [{"tenant": t, "point_id": p, "doc_id": d.doc_id, "docid": docid(i)}
                    for i, (p, d) in enumerate(zip(ids, chunk, strict=True))]
    store.close()
    codec = SemanticCodec(10, 4)
    model, tok, spec = build_default_model(codec.vocab_size, 3, codec.max_length + 1)
    idx = Path(cfg.index_dir)
    model.save_pretrained(idx / MODEL_DIR)
    tok.save_pretrained(idx / MODEL_DIR)
    (idx / DOCIDS).write_text("".join(json.dumps(r) + "\n" for r in records))
    write_manifest(idx, Manifest(collection=cfg.collection, tenant_key=cfg.tenant_key, codec=codec.to_json(),
                                 model=dataclasses.asdict(spec), tenants={A: PER_TENANT, B: PER_TENANT}))
    return cfg


class Server:
    """``genret serve`` in a child process (clients and server do not share an interpreter); ``build``: a
    directory whose ``genret`` package the server runs instead of the installed one."""

    def __init__(self, cfg: Config, build: str = "", **settings: Any) -> None:
        env = {**os.environ, "GENRET_QDRANT_PATH": cfg.qdrant_path, "GENRET_INDEX_DIR": cfg.index_dir,
               "GENRET_COLLECTION": cfg.collection, "GENRET_DEVICE": "cpu",
               **{f"GENRET_{k.upper()}": str(v) for k, v in settings.items()}}
        if build:
            env["PYTHONPATH"] = build
        self.proc = subprocess.Popen([sys.executable, "-m", "genret.cli", "serve", "--port", "0"], env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        match = re.search(r"serving on ([\d.]+):(\d+)", line)
        if not match:
            raise RuntimeError(f"the server did not start: {line!r}")
        self.target = f"{match.group(1)}:{match.group(2)}"

    def close(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:  # not a clean stop: say so, and leave nothing running
            self.proc.kill()
            raise


def search(tenant: str, query: str, hybrid: bool = False, lexical: bool = True,
           feedback: float | None = None) -> Callable[[pb_grpc.GenRetStub], Any]:
    req = pb.SearchRequest(tenant=tenant, query=query, top_k=10, beam_size=20, without_lexical=not lexical,
                           feedback=feedback)
    if hybrid:
        req.mode, req.fusion = pb.SEARCH_MODE_HYBRID, pb.FUSION_RRF
    return lambda stub: stub.Search(req, timeout=120)


def write_pair(tenant: str, docs: list[tuple[str, str, str]]) -> list[Callable[[pb_grpc.GenRetStub], Any]]:
    """Upsert the documents, then delete them: two timed calls."""
    up = pb.UpsertRequest(tenant=tenant, documents=[pb.Document(id=i, title=t, text=x) for i, t, x in docs])
    down = pb.DeleteRequest(tenant=tenant, ids=[i for i, _, _ in docs])
    return [lambda stub: stub.UpsertDocuments(up, timeout=300), lambda stub: stub.DeleteDocuments(down, timeout=300)]


def paced(target: str, calls: Callable[[int], list[Callable[[pb_grpc.GenRetStub], Any]]], per_s: float,
          offset: float, stop: threading.Event, out: list[float], errors: list[str]) -> None:
    """One client of B: ``per_s`` rounds a second, the first after ``offset`` periods; each call timed."""
    with grpc.insecure_channel(target) as ch:
        stub = pb_grpc.GenRetStub(ch)
        due = time.monotonic() + (offset - 1) / per_s
        for n in itertools.count():
            due += 1.0 / per_s
            for call in calls(n):
                t0 = time.perf_counter()
                try:
                    call(stub)
                    out.append(time.perf_counter() - t0)
                except grpc.RpcError as exc:
                    errors.append(str(exc.code()))
            if stop.wait(max(0.0, due - time.monotonic())):
                return


def flooding(target: str, calls: Callable[[int], list[Callable[[pb_grpc.GenRetStub], Any]]], stop: Any,
             done: Any) -> None:
    """One client of A: calls back to back; a refusal (RESOURCE_EXHAUSTED) is retried after 5 ms. A round
    begun is finished, so A's documents written are deleted again before the next phase."""
    with grpc.insecure_channel(target) as ch:
        stub = pb_grpc.GenRetStub(ch)
        for n in itertools.count():
            for call in calls(n):
                while True:
                    try:
                        call(stub)
                        with done.get_lock():
                            done.value += 1
                        break
                    except grpc.RpcError as exc:
                        if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                            raise
                        time.sleep(0.005)
            if stop.is_set():
                return


def flood(target: str, clients: int, kind: str, stop: Any, done: Any) -> None:
    """A's clients, in a process of their own: B's clients do not share an interpreter (or its lock) with
    them, as they would not share a machine in production."""
    make = FLOODS[kind]
    threads = [threading.Thread(target=flooding, args=(target, lambda n, c=c: make(c, n), stop, done))
               for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def phase(target: str, seconds: float, b_calls: Callable[[int, int], list[Callable[[pb_grpc.GenRetStub], Any]]],
          b_rate: float, a_clients: int, a_kind: str) -> dict[str, Any]:
    ctx = multiprocessing.get_context("spawn")
    stop, done = ctx.Event(), ctx.Value("l", 0)
    flooder = ctx.Process(target=flood, args=(target, a_clients, a_kind, stop, done)) if a_clients else None
    if flooder is not None:  # A's flood is under way before B is timed
        flooder.start()
        waited = time.monotonic()
        while done.value < a_clients and time.monotonic() - waited < 120:
            time.sleep(0.1)
        time.sleep(2.0)
    lat: list[float] = []
    errors: list[str] = []
    b_stop = threading.Event()
    a_before, t0 = done.value, time.monotonic()
    b = [threading.Thread(target=paced, args=(target, lambda n, c=c: b_calls(c, n), b_rate, c / 2, b_stop, lat, errors))
         for c in range(2)]  # B's two clients take turns: one call every half period
    for t in b:
        t.start()
    time.sleep(seconds)
    a_calls_done = done.value - a_before
    elapsed = time.monotonic() - t0
    b_stop.set()
    stop.set()
    for t in b:
        t.join()
    if flooder is not None:
        flooder.join()
    return {"b_calls": len(lat), "b_errors": len(errors), "b_p50_ms": percentile(lat, 50) * 1e3,
            "b_p99_ms": percentile(lat, 99) * 1e3, "b_max_ms": max(lat) * 1e3 if lat else float("nan"),
            "a_calls_per_s": a_calls_done / elapsed}


QUERIES = list(load_queries(demo_corpus_path()).values())
TEXTS = [f"{d.title}. {d.text}" for d in load_corpus(demo_corpus_path())[:200]]


def b_search(c: int, n: int) -> list[Callable[[pb_grpc.GenRetStub], Any]]:
    return [search(B, QUERIES[(2 * n + c) % len(QUERIES)])]


def a_feedback(c: int, n: int) -> list[Callable[[pb_grpc.GenRetStub], Any]]:
    return [search(A, QUERIES[(7 * n + c) % len(QUERIES)], feedback=1.0)]


def b_write(c: int, n: int) -> list[Callable[[pb_grpc.GenRetStub], Any]]:
    return write_pair(B, [(f"b{c}-{n}", "new", TEXTS[(2 * n + c) % len(TEXTS)])])


def a_search(c: int, n: int) -> list[Callable[[pb_grpc.GenRetStub], Any]]:
    return [search(A, QUERIES[(7 * n + c) % len(QUERIES)])]


def a_write(c: int, n: int) -> list[Callable[[pb_grpc.GenRetStub], Any]]:
    return write_pair(A, [(f"a{c}-{n}-{i}", "new", TEXTS[(8 * n + i + c) % len(TEXTS)]) for i in range(8)])


def b_hybrid(c: int, n: int) -> list[Callable[[pb_grpc.GenRetStub], Any]]:
    return [search(B, QUERIES[(2 * n + c) % len(QUERIES)], hybrid=True)]


def a_hybrid(c: int, n: int, lexical: bool = True) -> list[Callable[[pb_grpc.GenRetStub], Any]]:
    up, down = write_pair(A, [(f"h{c}-{n}", "new", TEXTS[(3 * n + c) % len(TEXTS)])])
    return [up, search(A, QUERIES[(5 * n + c) % len(QUERIES)], True, lexical), down,
            search(A, QUERIES[(5 * n + c + 1) % len(QUERIES)], True, lexical)]


def a_hybrid_unlexical(c: int, n: int) -> list[Callable[[pb_grpc.GenRetStub], Any]]:
    return a_hybrid(c, n, lexical=False)


@functools.cache
def a_large_calls(c: int) -> list[Callable[[pb_grpc.GenRetStub], Any]]:
    return write_pair(A, [(f"L{c}-{i}", "large", f"{i} {LARGE_TEXT}") for i in range(40)])


def a_large(c: int, n: int) -> list[Callable[[pb_grpc.GenRetStub], Any]]:
    return a_large_calls(c)  # the same 4 MB request each time: the client builds it once


FLOODS: dict[str, Callable[[int, int], list[Callable[[pb_grpc.GenRetStub], Any]]]] = {
    "search": a_search, "feedback": a_feedback, "write": a_write, "large": a_large, "hybrid": a_hybrid,
    "hybrid-unlexical": a_hybrid_unlexical}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=45.0, help="timed length of each phase")
    p.add_argument("--before", default="", help="directory holding an earlier build of the genret package")
    p.add_argument("--kinds", default="reads,writes",
                   help="phases to run: reads, feedback, writes, hybrid, lexical-writes")
    p.add_argument("--lexical-docs", type=int, default=PER_TENANT + 100,
                   help="lexical index documents the server may hold (hybrid phases)")
    p.add_argument("--before-lexical-setting", default="lexical_max_docs",
                   help="the --before build's name for that setting")
    p.add_argument("--out", default="integration/bench/results/synthetic/fairness/fairness-cpu.json")
    args = p.parse_args()
    force_offline()
    torch.manual_seed(0)
    tmp = Path(tempfile.mkdtemp(prefix="genret-fairness-"))
    t0 = time.perf_counter()
    cfg = make_collection(tmp)
    print(f"built the collection and index in {time.perf_counter() - t0:.0f}s", flush=True)
    plan = [
        ("reads", "B alone", b_search, 2.0, 0, ""),
        ("reads", "A floods, 32 clients", b_search, 2.0, 32, "search"),
        ("reads", "A floods, 64 clients", b_search, 2.0, 64, "search"),
        ("feedback", "B alone", b_search, 2.0, 0, ""),
        ("feedback", "A floods, 32 clients", b_search, 2.0, 32, "search"),
        ("feedback", "A floods with feedback, 32 clients", b_search, 2.0, 32, "feedback"),
        ("writes", "B alone", b_write, 1.0, 0, ""),
        ("writes", "A floods, 32 clients", b_write, 1.0, 32, "write"),
        ("writes", "A floods, 64 clients", b_write, 1.0, 64, "write"),
        ("writes", "A floods, 4 clients at the size limit", b_write, 1.0, 4, "large"),
        ("hybrid", "B alone, A's lexical index built first", b_hybrid, 2.0, 0, ""),
        ("hybrid", "A writes and searches, no lexical list, 16 clients", b_hybrid, 2.0, 16, "hybrid-unlexical"),
        ("hybrid", "A writes and searches, 16 clients", b_hybrid, 2.0, 16, "hybrid"),
        ("lexical-writes", "B alone, A's lexical index built first", b_hybrid, 2.0, 0, ""),
        ("lexical-writes", "A's 4 clients write at the size limit", b_hybrid, 2.0, 4, "large"),
    ]
    kinds = set(args.kinds.split(","))
    plan = [step for step in plan if step[0] in kinds]
    rows: list[dict[str, Any]] = []
    settings = {"tenant_max_new_docids": 0, "tenant_max_inflight": 32}  # A's flood is bounded by its in-flight cap
    for build in ([args.before] if args.before else []) + [""]:
        lexical = {args.before_lexical_setting if build else "lexical_tenant_max_docs": args.lexical_docs}
        server = Server(cfg, build, **settings, **lexical)
        with grpc.insecure_channel(server.target) as ch:  # warm up: the model, the dense encoder, B's state
            stub = pb_grpc.GenRetStub(ch)
            for q in QUERIES[:4]:
                search(B, q)(stub)
            for call in write_pair(B, [("warm", "warm", TEXTS[0])]):
                call(stub)
        name = "before" if build else "this build"
        for kind, phase_name, b_calls, rate, a_clients, a_kind in plan:
            if kind in ("hybrid", "lexical-writes") and not a_clients:
                with grpc.insecure_channel(server.target) as ch:  # A's lexical index first
                    search(A, QUERIES[0], hybrid=True)(pb_grpc.GenRetStub(ch))
            res = phase(server.target, args.seconds, b_calls, rate, a_clients, a_kind)
            alone = next((r for r in rows if (r["build"], r["kind"]) == (name, kind)
                          and r["phase"].startswith("B alone")), None)
            res["p99_vs_alone"] = res["b_p99_ms"] / alone["b_p99_ms"] if alone else 1.0
            rows.append({"build": name, "kind": kind, "phase": phase_name, **res})
            print(f"{name:10s} {kind:6s} {phase_name:40s} B p50 {res['b_p50_ms']:7.1f} ms  p99 {res['b_p99_ms']:7.1f} ms"
                  f"  ({res['p99_vs_alone']:.2f}x alone)  A {res['a_calls_per_s']:.1f} calls/s", flush=True)
        server.close()
    cols = ["build", "kind", "phase", "b_calls", "b_errors", "b_p50_ms", "b_p99_ms", "b_max_ms", "p99_vs_alone",
            "a_calls_per_s"]
    table = print_table(rows, cols)
    write_json(args.out, {"benchmark": "fairness", "environment": environment(torch.device("cpu")),
                          "settings": {**vars(args), "documents_per_tenant": PER_TENANT, "server": settings,
                                       "lexical_documents": args.lexical_docs,
                                       "batch_rows": "default (8 on a CPU)", "write_workers": 2},
                          "rows": rows, "table": table})


if __name__ == "__main__":
    main()

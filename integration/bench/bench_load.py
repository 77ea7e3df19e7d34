"""Load and faults: open-loop load until saturation, a soak, a Qdrant outage, cancellation storms.

    python integration/bench/bench_load.py --data-dir genret-data --collection cranfield \
        [--phases sweep,outage,storm,soak] [--step-s 20] [--soak-min 30] [--knee RATE] \
        [--out integration/bench/results/cranfield/load/load-cpu.json]

The sidecar (``load_sidecar.py``: ``genret serve`` with a Qdrant outage switch) runs in its own process
on a copy of ``--data-dir`` (what ``make demo`` builds: the Cranfield index); this script talks to it
over gRPC only. At start it adds ``--tenants`` small tenants of 8 documents each (live upserts) beside
the demo's tenant of 1,400.

* **Traffic.** Open loop: Poisson arrivals at the offered rate, each call sent at its arrival time
  whatever the earlier ones do, latency counted from that time. Half the calls go to the big tenant, half
  to a small one drawn uniformly; modes 60% generative, 25% dense, 15% hybrid; Cranfield's 225 queries;
  deadline 5 s.
* **sweep**: offered rates rising until saturation. The knee is the highest offered rate at which at most
  1% of the calls fail (deadline, admission) and p99 stays within ``--slo-p99-ms`` (1,000 ms); the
  throughput at the knee is the calls answered OK per second there.
* **outage**: load at half the knee and a writer upserting a new document every 0.5 s; Qdrant is down
  from second 20 to 40. Per second: calls by status, health; the writes acknowledged are then looked up
  (in the sidecar's trie through a filtered search, and in Qdrant after the sidecar stops).
* **storm**: for 20 s, calls at twice the knee that the client cancels 2-50 ms after sending; then the
  in-flight gauge (``/metrics``), threads, and latency at half the knee against the same load just before.
* **soak**: ``--soak-min`` minutes at 70% of the knee; the sidecar's RSS, open file descriptors and
  threads sampled every 10 s, with the latency of each window.

Results: JSON and three plots (latency vs offered load, soak, outage timeline) next to ``--out``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import psutil
import torch
from common import environment, print_table, write_json
from google.protobuf import struct_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from genret.store import point_id_for  # noqa: E402
from genret.v1 import genret_pb2 as pb  # noqa: E402
from genret.v1 import genret_pb2_grpc as pb_grpc  # noqa: E402

BIG = "demo"
MODES = ((pb.SEARCH_MODE_GENERATIVE, "generative", 0.60), (pb.SEARCH_MODE_DENSE, "dense", 0.25),
         (pb.SEARCH_MODE_HYBRID, "hybrid", 0.15))
DEADLINE_S = 5.0
WRITERS = 8  # the writer's tenants, so no tenant reaches its quota of untrained docids in one run


def writer_tenant(doc_id: str) -> str:
    """Write ``w<i>`` goes to tenant ``writes-<i mod WRITERS>``."""
    return f"writes-{int(doc_id[1:]) % WRITERS}"


@dataclass
class Call:
    t: float  # arrival, seconds from the phase's start
    latency: float
    code: str
    mode: str


# --- the sidecar -------------------------------------------------------------------------------
class Sidecar:
    def __init__(self, data_dir: Path, collection: str, switch: Path) -> None:
        self.switch = switch
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "integration/bench/load_sidecar.py"), "--data-dir", str(data_dir),
             "--collection", collection, "--switch", str(switch)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)})
        self.target, self.metrics = "", ""
        assert self.proc.stdout is not None
        while not self.target:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("the sidecar exited before serving")
            if m := re.search(r"metrics on (\S+)", line):
                self.metrics = m.group(1)
            if m := re.search(r"serving on (\S+)", line):
                self.target = m.group(1)
        self.ps = psutil.Process(self.proc.pid)

    def sample(self) -> dict[str, float]:
        return {"rss_mb": self.ps.memory_info().rss / 2**20, "fds": self.ps.num_fds(), "threads": self.ps.num_threads()}

    def inflight(self) -> float:
        text = urllib.request.urlopen(self.metrics, timeout=5).read().decode()
        return sum(float(v) for v in re.findall(r"^genret_inflight\{[^}]*\} (\S+)$", text, re.M))

    def outage(self, down: bool) -> None:
        if down:
            self.switch.touch()
        else:
            self.switch.unlink(missing_ok=True)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# --- traffic -----------------------------------------------------------------------------------
class Traffic:
    def __init__(self, queries: list[str], small: list[str], seed: int) -> None:
        self.queries, self.small = queries, small
        self.rng = np.random.default_rng(seed)
        self.weights = np.array([w for _, _, w in MODES])

    def request(self) -> tuple[pb.SearchRequest, str]:
        mode, name, _ = MODES[int(self.rng.choice(len(MODES), p=self.weights))]
        tenant = BIG if self.rng.random() < 0.5 or not self.small else self.small[int(self.rng.integers(len(self.small)))]
        text = self.queries[int(self.rng.integers(len(self.queries)))]
        return pb.SearchRequest(tenant=tenant, query=text, top_k=10, mode=mode), name


class Channels:
    """A few channels to the sidecar, used in turn, so no one HTTP/2 connection's stream limit is the cap."""

    def __init__(self, target: str, n: int = 4) -> None:
        self.channels = [grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
                         for _ in range(n)]
        self.stubs = [pb_grpc.GenRetStub(c) for c in self.channels]
        self._i = 0

    def stub(self) -> pb_grpc.GenRetStub:
        self._i = (self._i + 1) % len(self.stubs)
        return self.stubs[self._i]

    async def close(self) -> None:
        for c in self.channels:
            await c.close()


async def open_loop(channels: Channels, traffic: Traffic, rate: float, seconds: float,
                    cancel_after: tuple[float, float] | None = None) -> list[Call]:
    """Poisson arrivals at ``rate`` per second for ``seconds``; each call's latency from its arrival time.
    ``cancel_after`` (lo, hi): the client cancels each call that many seconds after sending it."""
    loop = asyncio.get_running_loop()
    calls: list[Call] = []
    t0 = loop.time()

    async def one(at: float, req: pb.SearchRequest, mode: str) -> None:
        code = "OK"
        try:
            call = channels.stub().Search(req, timeout=DEADLINE_S)
            if cancel_after is None:
                await call
            else:
                await asyncio.sleep(traffic.rng.uniform(*cancel_after))
                call.cancel()
                code = "CANCELLED"
        except grpc.aio.AioRpcError as exc:
            code = exc.code().name
        except asyncio.CancelledError:
            code = "CANCELLED"
        calls.append(Call(at, loop.time() - t0 - at, code, mode))

    tasks = set()
    at = float(traffic.rng.exponential(1 / rate))
    while at < seconds:
        delay = t0 + at - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        req, mode = traffic.request()
        tasks.add(asyncio.create_task(one(at, req, mode)))
        at += float(traffic.rng.exponential(1 / rate))
    await asyncio.gather(*tasks)
    return calls


def summary(calls: list[Call], rate: float, seconds: float) -> dict[str, Any]:
    ok = [c.latency for c in calls if c.code == "OK"]
    codes = Counter(c.code for c in calls)
    pct = (lambda q: float(np.percentile(ok, q)) * 1000) if ok else (lambda q: float("nan"))
    by_mode = {m: float(np.percentile([c.latency for c in calls if c.code == "OK" and c.mode == m], 50)) * 1000
               for _, m, _ in MODES if any(c.code == "OK" and c.mode == m for c in calls)}
    return {"offered_rps": rate, "sent": len(calls), "achieved_rps": len(ok) / seconds,
            "p50_ms": pct(50), "p99_ms": pct(99), "p999_ms": pct(99.9), "errors": len(calls) - len(ok),
            "error_rate": (len(calls) - len(ok)) / max(len(calls), 1), "codes": dict(codes), "p50_ms_by_mode": by_mode}


# --- phases ------------------------------------------------------------------------------------
async def sweep(channels: Channels, traffic: Traffic, step_s: float, slo_ms: float
                ) -> tuple[list[dict[str, Any]], float]:
    """Closed-loop calls estimate capacity; then offered rates from a tenth of it up, until saturation."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    for _ in range(20):
        req, _ = traffic.request()
        await channels.stub().Search(req, timeout=DEADLINE_S)
    capacity = 20 / (loop.time() - t0)
    rows: list[dict[str, Any]] = []
    for frac in (0.1, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0):
        rate = round(capacity * frac, 2)
        row = summary(await open_loop(channels, traffic, rate, step_s), rate, step_s)
        rows.append(row)
        print(f"  offered {rate:7.2f}/s  achieved {row['achieved_rps']:7.2f}/s  p50 {row['p50_ms']:8.1f} ms  "
              f"p99 {row['p99_ms']:8.1f} ms  errors {row['errors']}", flush=True)
        await asyncio.sleep(DEADLINE_S)  # the queue of the step drains before the next
        if row["achieved_rps"] < 0.8 * rate and frac >= 1.0 and len(rows) >= 2 and \
                rows[-2]["achieved_rps"] < 0.8 * rows[-2]["offered_rps"]:
            break
    served = [r for r in rows if r["error_rate"] <= 0.01 and r["p99_ms"] <= slo_ms]
    knee = max((r["offered_rps"] for r in served), default=rows[0]["offered_rps"])
    return rows, knee


async def health_status(channel: grpc.aio.Channel) -> str:
    try:
        resp = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)
    except grpc.aio.AioRpcError as exc:
        return exc.code().name


async def outage(sidecar: Sidecar, channels: Channels, traffic: Traffic, rate: float, total_s: float = 60,
                 down: tuple[float, float] = (20, 40)) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    health: list[tuple[float, str]] = []
    writes: list[dict[str, Any]] = []
    stop = asyncio.Event()

    async def poll_health() -> None:
        while not stop.is_set():
            health.append((loop.time() - t0, await health_status(channels.channels[0])))
            await asyncio.sleep(0.25)

    async def writer() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            doc = pb.Document(id=f"w{i}", title=f"write {i}", text=f"pressure distribution on a wing, note {i}")
            at, code = loop.time() - t0, "OK"
            try:
                await channels.stub().UpsertDocuments(pb.UpsertRequest(tenant=writer_tenant(doc.id), documents=[doc]),
                                                      timeout=10)
            except grpc.aio.AioRpcError as exc:
                code = exc.code().name
            writes.append({"id": doc.id, "t": at, "code": code, "latency_ms": (loop.time() - t0 - at) * 1000})
            await asyncio.sleep(0.5)

    async def switch() -> tuple[float, float]:
        await asyncio.sleep(down[0] - (loop.time() - t0))
        sidecar.outage(True)
        began = loop.time() - t0
        await asyncio.sleep(down[1] - (loop.time() - t0))
        sidecar.outage(False)
        return began, loop.time() - t0

    tasks = [asyncio.create_task(poll_health()), asyncio.create_task(writer())]
    switched = asyncio.create_task(switch())
    calls = await open_loop(channels, traffic, rate, total_s)
    stop.set()
    await asyncio.gather(*tasks)
    began, ended = await switched
    seconds = []
    for s in range(int(total_s)):
        in_s = [c for c in calls if s <= c.t < s + 1]
        states = [h for t, h in health if s <= t < s + 1]
        seconds.append({"second": s, "codes": dict(Counter(c.code for c in in_s)),
                        "health": states[-1] if states else "", "qdrant_down": began <= s + 0.5 < ended})
    during = [c for c in calls if began + 1 <= c.t < ended]  # after the first second of the outage
    unavailable = [c.latency * 1000 for c in during if c.code == "UNAVAILABLE"]
    not_serving = next((t for t, h in health if t >= began and h == "NOT_SERVING"), None)
    serving = next((t for t, h in health if t >= ended and h == "SERVING"), None)
    first_ok = next((c.t for c in sorted(calls, key=lambda c: c.t) if c.t >= ended and c.code == "OK"), None)
    return {"offered_rps": rate, "down_from_s": began, "down_until_s": ended, "seconds": seconds,
            "calls_during_outage": dict(Counter(c.code for c in during)),
            "unavailable_p50_ms": float(np.percentile(unavailable, 50)) if unavailable else None,
            "unavailable_p99_ms": float(np.percentile(unavailable, 99)) if unavailable else None,
            "not_serving_after_s": None if not_serving is None else not_serving - began,
            "serving_again_after_s": None if serving is None else serving - ended,
            "first_ok_after_s": None if first_ok is None else first_ok - ended,
            "after_outage": summary([c for c in calls if c.t >= ended + 5], rate, total_s - ended - 5),
            "writes": writes}


async def acknowledged_in_trie(channels: Channels, acked: list[str]) -> list[str]:
    """The acknowledged writes a generative search restricted to their own point does not find."""
    missing = []
    for doc_id in acked:
        tenant = writer_tenant(doc_id)
        flt = {"must": [{"has_id": [point_id_for(tenant, doc_id)]}]}
        s = struct_pb2.Struct()
        s.update(flt)
        resp = await channels.stub().Search(pb.SearchRequest(tenant=tenant, query="pressure distribution on a wing",
                                                             top_k=1, filter=s), timeout=30)
        if [h.point_id for h in resp.hits] != [point_id_for(tenant, doc_id)]:
            missing.append(doc_id)
    return missing


def acknowledged_in_qdrant(qdrant_path: Path, collection: str, acked: list[str]) -> list[str]:
    from qdrant_client import QdrantClient

    client = QdrantClient(path=str(qdrant_path))
    try:
        got = client.retrieve(collection, [point_id_for(writer_tenant(d), d) for d in acked], with_payload=True)
    finally:
        client.close()
    held = {p.payload["doc_id"] for p in got if p.payload and p.payload.get("genret_docid")}
    return [d for d in acked if d not in held]


async def storm(sidecar: Sidecar, channels: Channels, traffic: Traffic, knee: float, seconds: float = 20
                ) -> dict[str, Any]:
    before = summary(await open_loop(channels, traffic, knee / 2, 15), knee / 2, 15)
    proc_before = sidecar.sample()
    storm_calls = await open_loop(channels, traffic, 2 * knee, seconds, cancel_after=(0.002, 0.05))
    await asyncio.sleep(3)
    inflight = sidecar.inflight()
    proc_after = sidecar.sample()
    after = summary(await open_loop(channels, traffic, knee / 2, 15), knee / 2, 15)
    return {"storm_rps": 2 * knee, "storm_calls": len(storm_calls),
            "storm_codes": dict(Counter(c.code for c in storm_calls)),
            "inflight_3s_after": inflight, "process_before": proc_before, "process_after": proc_after,
            "before": before, "after": after}


async def soak(sidecar: Sidecar, channels: Channels, traffic: Traffic, rate: float, minutes: float,
               every_s: float = 10) -> dict[str, Any]:
    samples = []
    t0 = time.monotonic()
    while time.monotonic() - t0 < minutes * 60:
        calls = await open_loop(channels, traffic, rate, every_s)
        row = summary(calls, rate, every_s)
        samples.append({"t_s": time.monotonic() - t0, **sidecar.sample(), "p50_ms": row["p50_ms"],
                        "p99_ms": row["p99_ms"], "errors": row["errors"], "sent": row["sent"]})
    t = np.array([s["t_s"] for s in samples])
    rss = np.array([s["rss_mb"] for s in samples])
    half = t >= t[-1] / 2
    slope = float(np.polyfit(t[half] / 3600, rss[half], 1)[0]) if half.sum() >= 2 else float("nan")
    return {"rate_rps": rate, "minutes": minutes, "samples": samples,
            "rss_first_mb": float(rss[0]), "rss_last_mb": float(rss[-1]), "rss_max_mb": float(rss.max()),
            "rss_slope_second_half_mb_per_h": slope,
            "fds_first": samples[0]["fds"], "fds_last": samples[-1]["fds"], "fds_max": max(s["fds"] for s in samples),
            "threads_first": samples[0]["threads"], "threads_last": samples[-1]["threads"],
            "errors": sum(s["errors"] for s in samples), "sent": sum(s["sent"] for s in samples)}


# --- set-up and plots ----------------------------------------------------------------------------
async def add_tenants(channels: Channels, corpus: list[dict[str, str]], n: int) -> list[str]:
    names = []
    for i in range(n):
        tenant = f"t{i:02d}"
        docs = [pb.Document(id=d["_id"], title=d.get("title", ""), text=d["text"])
                for d in corpus[i * 8 : i * 8 + 8]]
        await channels.stub().UpsertDocuments(pb.UpsertRequest(tenant=tenant, documents=docs), timeout=120)
        names.append(tenant)
    return names


def _save(fig: Any, ax: Any, ax2: Any, title: str, out: Path, suffix: str) -> str:
    """A two-axis figure's legends and title, saved beside ``out`` as ``<stem>-<suffix>.png``; its path."""
    ax.legend(loc="upper left")
    ax2.legend(loc="lower right")
    ax.set_title(title)
    fig.tight_layout()
    path = out.with_name(f"{out.stem}-{suffix}.png")
    fig.savefig(path, dpi=110)
    return str(path)


def plot(result: dict[str, Any], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    if "sweep" in result:
        rows = result["sweep"]["steps"]
        x = [r["offered_rps"] for r in rows]
        fig, ax = plt.subplots(figsize=(7, 4.2))
        for key, label in (("p50_ms", "p50"), ("p99_ms", "p99"), ("p999_ms", "p99.9")):
            ax.plot(x, [r[key] for r in rows], marker="o", label=label)
        ax.set_yscale("log")
        ax.set_xlabel("offered load (requests/s, Poisson)")
        ax.set_ylabel("latency (ms)")
        ax.axvline(result["sweep"]["knee_rps"], color="grey", ls="--", label=f"knee {result['sweep']['knee_rps']:.1f}/s")
        ax2 = ax.twinx()
        ax2.plot(x, [r["achieved_rps"] for r in rows], color="black", ls=":", marker=".", label="answered/s")
        ax2.set_ylabel("answered OK per second")
        written.append(_save(fig, ax, ax2, f"genret sidecar, {result['environment']['device']}", out, "latency"))
    if "soak" in result:
        s = result["soak"]["samples"]
        fig, ax = plt.subplots(figsize=(7, 4))
        ax.plot([r["t_s"] / 60 for r in s], [r["rss_mb"] for r in s], label="RSS (MiB)")
        ax.set_xlabel("minutes")
        ax.set_ylabel("RSS (MiB)")
        ax2 = ax.twinx()
        ax2.plot([r["t_s"] / 60 for r in s], [r["fds"] for r in s], color="tab:orange", label="open fds")
        ax2.set_ylabel("open file descriptors")
        written.append(_save(fig, ax, ax2, f"soak at {result['soak']['rate_rps']:.1f} req/s", out, "soak"))
    if "outage" in result:
        secs = result["outage"]["seconds"]
        codes = sorted({c for s in secs for c in s["codes"]})
        fig, ax = plt.subplots(figsize=(8, 4))
        bottom = np.zeros(len(secs))
        for code in codes:
            v = np.array([s["codes"].get(code, 0) for s in secs])
            ax.bar([s["second"] for s in secs], v, bottom=bottom, label=code)
            bottom += v
        o = result["outage"]
        ax.axvspan(o["down_from_s"], o["down_until_s"], color="red", alpha=0.1, label="Qdrant down")
        for s in secs:
            if s["health"] == "NOT_SERVING":
                ax.plot(s["second"] + 0.5, bottom.max() * 1.05, "v", color="red", ms=4)
        ax.set_xlabel("second (health NOT_SERVING marked ▼)")
        ax.set_ylabel("requests answered, by status")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out.with_name(out.stem + "-outage.png"), dpi=110)
        written.append(str(out.with_name(out.stem + "-outage.png")))
    return written


async def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    result: dict[str, Any] = {"environment": environment(torch.device("cpu")), "config": vars(args).copy()}
    sidecar = Sidecar(work, args.collection, work / "qdrant-down")
    channels = Channels(sidecar.target)
    try:
        demo = ROOT / "plugin/demo_data/cranfield"
        corpus = [json.loads(x) for x in (demo / "corpus.jsonl").read_text().splitlines()]
        queries = [json.loads(x)["text"] for x in (demo / "queries.jsonl").read_text().splitlines()]
        small = await add_tenants(channels, corpus, args.tenants)
        traffic = Traffic(queries, small, args.seed)
        knee = args.knee
        phases = args.phases.split(",")
        if "sweep" in phases:
            print("sweep: offered load until saturation", flush=True)
            rows, knee = await sweep(channels, traffic, args.step_s, args.slo_p99_ms)
            result["sweep"] = {"step_s": args.step_s, "slo_p99_ms": args.slo_p99_ms, "steps": rows, "knee_rps": knee,
                               "throughput_at_knee_rps": next(r["achieved_rps"] for r in rows if r["offered_rps"] == knee)}
            print_table(rows, ["offered_rps", "achieved_rps", "p50_ms", "p99_ms", "p999_ms", "errors"])
            print(f"knee: {knee:.2f} requests/s offered", flush=True)
        if not knee:
            raise SystemExit("no knee: run the sweep phase or give --knee")
        if "outage" in phases:
            print(f"outage: Qdrant down for 20 s under {knee / 2:.1f} req/s and a writer", flush=True)
            o = await outage(sidecar, channels, traffic, knee / 2)
            acked = [w["id"] for w in o["writes"] if w["code"] == "OK"]
            o["acknowledged_writes"] = len(acked)
            o["refused_writes"] = dict(Counter(w["code"] for w in o["writes"] if w["code"] != "OK"))
            o["refused_writes_outside_outage"] = [w for w in o["writes"] if w["code"] != "OK" and not
                                                  o["down_from_s"] - 0.5 <= w["t"] <= o["down_until_s"] + 1.5]
            o["acknowledged_missing_from_trie"] = await acknowledged_in_trie(channels, acked)
            result["outage"] = o
            for k in ("calls_during_outage", "unavailable_p50_ms", "unavailable_p99_ms", "not_serving_after_s",
                      "serving_again_after_s", "first_ok_after_s", "acknowledged_writes", "refused_writes",
                      "refused_writes_outside_outage",
                      "acknowledged_missing_from_trie"):
                print(f"  {k}: {o[k]}", flush=True)
        if "storm" in phases:
            print(f"storm: calls cancelled 2-50 ms after sending, {2 * knee:.1f} req/s for 20 s", flush=True)
            result["storm"] = st = await storm(sidecar, channels, traffic, knee)
            print(f"  in flight 3 s after: {st['inflight_3s_after']}; p50 before {st['before']['p50_ms']:.1f} ms, "
                  f"after {st['after']['p50_ms']:.1f} ms; threads {st['process_before']['threads']} -> "
                  f"{st['process_after']['threads']}", flush=True)
        if "soak" in phases:
            print(f"soak: {args.soak_min} min at {0.7 * knee:.1f} req/s", flush=True)
            result["soak"] = sk = await soak(sidecar, channels, traffic, 0.7 * knee, args.soak_min)
            print(f"  RSS {sk['rss_first_mb']:.0f} -> {sk['rss_last_mb']:.0f} MiB (slope over the second half "
                  f"{sk['rss_slope_second_half_mb_per_h']:.1f} MiB/h); fds {sk['fds_first']} -> {sk['fds_last']}; "
                  f"errors {sk['errors']} of {sk['sent']}", flush=True)
    finally:
        await channels.close()
        sidecar.stop()
    if "outage" in result:
        acked = [w["id"] for w in result["outage"]["writes"] if w["code"] == "OK"]
        lost = acknowledged_in_qdrant(work / "qdrant", args.collection, acked)
        result["outage"]["acknowledged_missing_from_qdrant"] = lost
        print(f"  acknowledged writes missing from Qdrant after the sidecar stopped: {lost}")
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default="genret-data", help="holds qdrant/ and index/ (copied, never changed)")
    p.add_argument("--collection", default="cranfield")
    p.add_argument("--phases", default="sweep,outage,storm,soak")
    p.add_argument("--step-s", type=float, default=20.0)
    p.add_argument("--slo-p99-ms", type=float, default=1000.0, help="the knee's latency objective")
    p.add_argument("--soak-min", type=float, default=30.0)
    p.add_argument("--knee", type=float, default=0.0, help="offered rate at the knee, when the sweep is not run")
    p.add_argument("--tenants", type=int, default=31, help="small tenants added beside the big one")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="integration/bench/results/cranfield/load/load-cpu.json")
    p.add_argument("--update", action="store_true", help="keep the other phases already in --out; replace those run")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="genret-load-") as tmp:
        work = Path(tmp)
        shutil.copytree(Path(args.data_dir) / "qdrant", work / "qdrant")
        shutil.copytree(Path(args.data_dir) / "index", work / "index")
        result = asyncio.run(run(args, work))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.update and out.exists():
        kept = json.loads(out.read_text())  # the phases not run again, with the run that measured them
        earlier = {"environment": kept.pop("environment"), "config": kept.pop("config")}
        result = {**kept, **result, "phases_kept_from": earlier}
    result["plots"] = plot(result, out)
    write_json(out, result)


if __name__ == "__main__":
    main()

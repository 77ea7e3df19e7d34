"""`genret eval`: every search mode, Qdrant dense search and BM25 on one BEIR split, side by side.

Metrics come from ir-measures: Hits@k is Success@k (a relevant document in the top k), MRR@10 is RR@10.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ir_measures
import numpy as np
from ir_measures import RR, Success, nDCG
from tqdm import tqdm

from genret.data.beir import load_qrels, load_queries
from genret.data.index_dir import library_versions
from genret.data.lexical import Bm25
from genret.data.progress import progress_interval
from genret.serving.engine import Engine
from genret.store import QdrantStore
from genret.types import Fusion, Mode, SearchQuery

log = logging.getLogger(__name__)
MEASURES = {"Hits@1": Success @ 1, "Hits@10": Success @ 10, "MRR@10": RR @ 10, "nDCG@10": nDCG @ 10,
            "Recall@100": ir_measures.R @ 100}
Run = dict[str, dict[str, float]]


@dataclass(frozen=True)
class EvalResult:
    name: str
    metrics: dict[str, float]
    seconds: float
    settings: dict[str, Any]


def score_run(qrels: Mapping[str, Mapping[str, int]], run: Run) -> dict[str, float]:
    """Mean of each measure over every judged query (a query with no results scores 0)."""
    agg = ir_measures.calc_aggregate(list(MEASURES.values()), {q: dict(r) for q, r in qrels.items()},
                                     {q: run.get(q, {}) for q in qrels})
    per = {name: float(agg.get(m, 0.0)) for name, m in MEASURES.items()}
    missing = [q for q in qrels if not run.get(q)]
    if missing:  # ir-measures averages over queries that have results; count empty runs as zeros
        scale = (len(qrels) - len(missing)) / len(qrels)
        per = {k: v * scale for k, v in per.items()}
    return per


def bm25_run(doc_keys: Sequence[str], texts: Sequence[str], queries: Mapping[str, str], k: int) -> Run:
    qids = list(queries)
    rows, scores = Bm25(texts).top([queries[q] for q in qids], k)
    return {q: {doc_keys[int(d)]: float(s) for d, s in zip(rows[i], scores[i], strict=True)}
            for i, q in enumerate(qids)}


def engine_run(engine: Engine, tenant: str, queries: Mapping[str, str], mode: Mode, k: int, beams: int,
               doc_key_of: Mapping[str, str], batch_size: int, fusion: Fusion = Fusion.DEFAULT) -> Run:
    qids = list(queries)
    run: Run = {}
    label = mode.value if mode != Mode.HYBRID else f"hybrid {fusion.value}"
    for s in tqdm(range(0, len(qids), batch_size), desc=f"eval {label}", unit="batch",
                  mininterval=progress_interval()):
        chunk = qids[s : s + batch_size]
        batch = [SearchQuery(tenant, queries[q], k, beams, mode, fusion=fusion) for q in chunk]
        for q, hits in zip(chunk, engine.search(batch), strict=True):
            run[q] = {doc_key_of[h.point_id]: h.score for h in hits}
    return run


def _timed(name: str, fn: Callable[[], Run], qrels: Mapping[str, Mapping[str, int]],
           settings: dict[str, Any]) -> EvalResult:
    t0 = time.perf_counter()
    run = fn()
    secs = time.perf_counter() - t0
    return EvalResult(name, score_run(qrels, run), secs, settings)


def fit_queries(queries: Mapping[str, str], limit: int) -> dict[str, str]:
    """Queries cut to the sidecar's request limit (``max_query_chars``), with a warning naming how many."""
    long = [q for q, text in queries.items() if len(text) > limit]
    if long:
        log.warning("%d judged queries are longer than the request limit of %d characters (the longest: %d); "
                    "each is cut to its first %d characters for every retriever", len(long), limit,
                    max(len(queries[q]) for q in long), limit)
    return {q: text[:limit] for q, text in queries.items()}


def evaluate(engine: Engine, store: QdrantStore, data: str | Path, split: str, tenant: str,
             beams: int = 100, k: int = 100, batch_size: int = 16) -> list[EvalResult]:
    queries_all = load_queries(data)
    qrels = load_qrels(data, split)
    queries = fit_queries({q: queries_all[q] for q in qrels if q in queries_all}, engine.config.max_query_chars)
    docs = list(store.scroll_tenant(tenant))
    if not docs:
        raise ValueError(f"tenant '{tenant}' has no documents in '{store.collection}'")
    doc_key_of = {d.point_id: d.doc_id for d in docs}
    results = [_timed("generative", lambda: engine_run(engine, tenant, queries, Mode.GENERATIVE, min(k, beams),
                                                       beams, doc_key_of, batch_size), qrels,
                      {"beam_size": beams, "top_k": min(k, beams), "docid_scheme": engine.codec.name,
                       "scoring": engine.config.scoring, "kernel_backend": engine.config.kernel_backend})]
    if store.has_vectors():
        results.append(_timed("dense (Qdrant, MiniLM)", lambda: engine_run(
            engine, tenant, queries, Mode.DENSE, k, k, doc_key_of, batch_size), qrels, {"top_k": k}))
        fused_k = min(k, beams)  # a search that decodes returns at most its beam's worth of hits
        fusions = [("RRF", Fusion.RRF), ("rescore", Fusion.RESCORE)]
        if engine.calibration is not None:
            fusions += [("weighted", Fusion.WEIGHTED), ("learned", Fusion.LEARNED)]
        for label, fusion in fusions:
            results.append(_timed(f"hybrid ({label})", lambda f=fusion: engine_run(  # type: ignore[misc]
                engine, tenant, queries, Mode.HYBRID, fused_k, beams, doc_key_of, batch_size, f), qrels,
                {"top_k": fused_k, "beam_size": beams, "fusion": fusion.value}))
        results.append(_timed("auto", lambda: engine_run(
            engine, tenant, queries, Mode.AUTO, fused_k, beams, doc_key_of, batch_size), qrels,
            {"top_k": fused_k, "beam_size": beams, "calibrated": engine.calibration is not None}))
    results.append(_timed("BM25 (bm25s k1=0.9 b=0.4)", lambda: bm25_run(
        [d.doc_id for d in docs], [f"{d.title} {d.text}" for d in docs], queries, k), qrels, {"top_k": k}))
    return results


def markdown_table(results: Sequence[EvalResult], title: str) -> str:
    names = list(MEASURES)
    lines = [f"### {title}", "", "| retriever | " + " | ".join(names) + " | seconds |",
             "|---|" + "---:|" * (len(names) + 1)]
    for r in results:
        lines.append(f"| {r.name} | " + " | ".join(f"{r.metrics[n]:.3f}" for n in names) + f" | {r.seconds:.1f} |")
    return "\n".join(lines) + "\n"


def write_results(results: Sequence[EvalResult], out_dir: str | Path, name: str,
                  context: dict[str, Any]) -> tuple[Path, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    payload = {"name": name, "context": context, "versions": library_versions(), "device": _device_name(),
               "results": [{"retriever": r.name, "metrics": r.metrics, "seconds": r.seconds,
                            "settings": r.settings} for r in results]}
    js = out / f"{name}.json"
    md = out / f"{name}.md"
    js.write_text(json.dumps(payload, indent=2, sort_keys=True, default=_np_default))
    md.write_text(markdown_table(results, name))
    return js, md


def _np_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    return str(o)


def _device_name() -> str:
    import platform

    import torch

    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"cpu: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"

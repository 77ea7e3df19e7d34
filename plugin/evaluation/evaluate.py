"""`genret eval`: every search mode, Qdrant dense search and BM25 on one BEIR split, side by side.

Metrics come from ir-measures: Hits@k is Success@k (a relevant document in the top k), MRR@10 is RR@10.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Collection, Mapping, Sequence
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
from genret.ranking.fusion import dbsf
from genret.serving.engine import Engine
from genret.store import QdrantStore
from genret.types import Fusion, Mode, SearchQuery

log = logging.getLogger(__name__)
MEASURES = {"Hits@1": Success @ 1, "Hits@10": Success @ 10, "MRR@10": RR @ 10, "nDCG@10": nDCG @ 10,
            "Recall@100": ir_measures.R @ 100}
Run = dict[str, dict[str, float]]
HYBRID_LABEL = "hybrid (DBSF: generative, dense, BM25)"  # HYBRID as served by default: the lexical list too
RRF_LABEL = "hybrid (RRF: generative, dense, BM25)"
RRF_TWO_LABEL = "hybrid (RRF: generative, dense)"
DENSE_LABEL = "dense (Qdrant, MiniLM)"
BM25_LABEL = "BM25 (bm25s k1=0.9 b=0.4)"
NO_GENERATIVE_LABEL = "dense + BM25 (DBSF, no generative)"  # what fusion gives without the generative list
FEEDBACK_LABEL = "generative + feedback"  # the generative list with pseudo-relevance feedback (--feedback)
HYBRID_FEEDBACK_LABEL = "hybrid (DBSF: generative + feedback, dense, BM25)"


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
               doc_key_of: Mapping[str, str], batch_size: int, fusion: Fusion = Fusion.DEFAULT,
               lexical: bool = True, feedback: float | None = None) -> Run:
    qids = list(queries)
    run: Run = {}
    label = mode.value if mode != Mode.HYBRID else f"hybrid {fusion.value}"
    for s in tqdm(range(0, len(qids), batch_size), desc=f"eval {label}", unit="batch",
                  mininterval=progress_interval()):
        chunk = qids[s : s + batch_size]
        batch = [SearchQuery(tenant, queries[q], k, beams, mode, fusion=fusion, lexical=lexical, feedback=feedback)
                 for q in chunk]
        for q, hits in zip(chunk, engine.search(batch), strict=True):
            run[q] = {doc_key_of[h.point_id]: h.score for h in hits}
    return run


def dbsf_run(runs: Sequence[Run]) -> Run:
    """Qdrant's DBSF of whole runs, query by query (each run's hits taken best first)."""
    out: Run = {}
    for q in dict.fromkeys(q for run in runs for q in run):
        lists = {str(i): sorted(run.get(q, {}).items(), key=lambda h: -h[1]) for i, run in enumerate(runs)}
        out[q] = {f.point_id: f.score for f in dbsf(lists)}
    return out


def fit_queries(queries: Mapping[str, str], limit: int) -> dict[str, str]:
    """Queries cut to the sidecar's request limit (``max_query_chars``), with a warning naming how many."""
    long = [q for q, text in queries.items() if len(text) > limit]
    if long:
        log.warning("%d judged queries are longer than the request limit of %d characters (the longest: %d); "
                    "each is cut to its first %d characters for every retriever", len(long), limit,
                    max(len(queries[q]) for q in long), limit)
    return {q: text[:limit] for q, text in queries.items()}


def evaluate(engine: Engine, store: QdrantStore, data: str | Path, split: str, tenant: str,
             beams: int = 100, k: int = 100, batch_size: int = 16,
             only: Collection[str] | None = None, feedback: float = 0.0) -> list[EvalResult]:
    """Every retriever and search mode on the split's judged queries (``only``: just the rows of these
    names, e.g. ``RRF_LABEL``; names of rows this index cannot run are ignored). With ``feedback`` > 0 the
    generative list and HYBRID (DBSF) also run with pseudo-relevance feedback at that weight, as rows of
    their own; the other rows are served as the engine's config says."""
    queries_all = load_queries(data)
    qrels = load_qrels(data, split)
    queries = fit_queries({q: queries_all[q] for q in qrels if q in queries_all}, engine.config.max_query_chars)
    docs = list(store.scroll_tenant(tenant))
    if not docs:
        raise ValueError(f"tenant '{tenant}' has no documents in '{store.collection}'")
    doc_key_of = {d.point_id: d.doc_id for d in docs}

    def run(mode: Mode, depth: int, fusion: Fusion = Fusion.DEFAULT, lexical: bool = True,
            weight: float | None = None) -> Callable[[], Run]:
        width = depth if mode == Mode.DENSE else beams
        return lambda: engine_run(engine, tenant, queries, mode, depth, width, doc_key_of, batch_size, fusion, lexical,
                                  weight)

    fused_k = min(k, beams)  # a search that decodes returns at most its beam's worth of hits
    plan: list[tuple[str, Callable[[], Run], dict[str, Any]]] = [
        ("generative", run(Mode.GENERATIVE, fused_k),
         {"beam_size": beams, "top_k": fused_k, "docid_scheme": engine.codec.name,
          "scoring": engine.config.scoring, "kernel_backend": engine.config.kernel_backend})]
    if feedback > 0:
        plan.append((FEEDBACK_LABEL, run(Mode.GENERATIVE, fused_k, weight=feedback),
                     {"beam_size": beams, "top_k": fused_k, "feedback": feedback}))
    if store.has_vectors():
        plan.append((DENSE_LABEL, run(Mode.DENSE, k), {"top_k": k}))
        lexical = [(HYBRID_LABEL, Fusion.DBSF, True), (RRF_LABEL, Fusion.RRF, True)]
        fusions = lexical if engine.config.hybrid_lexical else []
        fusions += [(RRF_TWO_LABEL, Fusion.RRF, False), ("hybrid (rescore)", Fusion.RESCORE, False)]
        if engine.calibration is not None:
            fusions += [("hybrid (weighted)", Fusion.WEIGHTED, False), ("hybrid (learned)", Fusion.LEARNED, False)]
        plan += [(label, run(Mode.HYBRID, fused_k, fusion, lexical),
                  {"top_k": fused_k, "beam_size": beams, "fusion": fusion.value, "lexical": lexical})
                 for label, fusion, lexical in fusions]
        if feedback > 0 and engine.config.hybrid_lexical:
            plan.append((HYBRID_FEEDBACK_LABEL, run(Mode.HYBRID, fused_k, Fusion.DBSF, True, feedback),
                         {"top_k": fused_k, "beam_size": beams, "fusion": "dbsf", "lexical": True,
                          "feedback": feedback}))
        plan.append(("auto", run(Mode.AUTO, fused_k),
                     {"top_k": fused_k, "beam_size": beams, "calibrated": engine.calibration is not None,
                      "lexical": engine.config.hybrid_lexical}))
    plan.append((BM25_LABEL, lambda: bm25_run([d.doc_id for d in docs], [f"{d.title} {d.text}" for d in docs],
                                              queries, k), {"top_k": k}))
    plan = [(name, fn, settings) for name, fn, settings in plan if only is None or name in only]
    runs: dict[str, tuple[Run, float]] = {}
    results = []
    for name, fn, settings in plan:
        t0 = time.perf_counter()
        runs[name] = (fn(), time.perf_counter() - t0)
        results.append(EvalResult(name, score_run(qrels, runs[name][0]), runs[name][1], settings))
    if (only is None or NO_GENERATIVE_LABEL in only) and DENSE_LABEL in runs and BM25_LABEL in runs:
        t0 = time.perf_counter()
        fused = dbsf_run([runs[DENSE_LABEL][0], runs[BM25_LABEL][0]])
        secs = runs[DENSE_LABEL][1] + runs[BM25_LABEL][1] + time.perf_counter() - t0
        results.append(EvalResult(NO_GENERATIVE_LABEL, score_run(qrels, fused), secs, {"top_k": k, "fusion": "dbsf"}))
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

"""Fitting and checking calibrated probabilities: `genret calibrate` and the calibration report.

Both run queries of a BEIR split through the engine and label each returned hit by the qrels. The fit
uses the training split (what the index was trained on); the report uses a held-out split and gives the
expected calibration error, a reliability diagram (PNG) and the precision of the hits kept by each of a
few probability thresholds.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from genret.data.beir import load_qrels, load_queries
from genret.ranking.calibration import (
    DENSE,
    GENERATIVE,
    Calibration,
    expected_calibration_error,
    fit_calibration,
    precision_kept,
    write_calibration,
)
from genret.ranking.fusion import Candidates
from genret.ranking.modes import complete
from genret.serving.engine import Engine
from genret.store import point_id_for
from genret.types import Fusion, Mode, SearchQuery


def _split(data: str | Path, split: str, tenant: str) -> tuple[dict[str, str], dict[str, set[str]]]:
    queries = load_queries(data)
    qrels = load_qrels(data, split)
    relevant = {q: {point_id_for(tenant, d) for d, g in rel.items() if g > 0} for q, rel in qrels.items()}
    return {q: queries[q] for q in qrels if q in queries}, relevant


def _candidates(engine: Engine, tenant: str, queries: Mapping[str, str], beams: int,
                batch: int = 16) -> dict[str, Candidates]:
    """Each query's generative and dense lists, ``beams`` deep, with every point of their union scored by
    both retrievers (as WEIGHTED fusion sees them)."""
    qids = list(queries)
    lists: dict[str, dict[str, list[tuple[str, float]]]] = {q: {} for q in qids}
    for mode, name in ((Mode.GENERATIVE, GENERATIVE), (Mode.DENSE, DENSE)):
        for s in range(0, len(qids), batch):
            chunk = qids[s : s + batch]
            reqs = [SearchQuery(tenant, queries[q], beams, beams, mode) for q in chunk]
            for q, hits in zip(chunk, engine.search(reqs), strict=True):
                lists[q][name] = [(h.point_id, h.score) for h in hits]
    out = {}
    for s in range(0, len(qids), batch):
        chunk = qids[s : s + batch]
        vectors = engine.embed_queries([queries[q] for q in chunk])
        for q, vec in zip(chunk, vectors, strict=True):
            scorers = engine.scorers(SearchQuery(tenant, queries[q]), vec)
            out[q] = Candidates(lists[q], complete(lists[q], scorers))
    return out


def calibrate_index(engine: Engine, data: str | Path, split: str, tenant: str, beams: int = 100,
                    depth: int = 10, limit: int | None = None) -> tuple[Calibration, Path]:
    queries, relevant = _split(data, split, tenant)
    if limit:
        queries = dict(list(queries.items())[:limit])
    runs = _candidates(engine, tenant, queries, beams)
    cal = fit_calibration(runs, relevant, depth, {"data": str(data), "split": split, "tenant": tenant,
                                                  "beam_size": beams, "depth": depth, "queries": len(queries),
                                                  "generative_feedback": engine.config.generative_feedback})
    path = write_calibration(engine.config.index_dir, cal)
    engine.calibration = cal
    return cal, path


THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5)
REPORTED = (("generative", Mode.GENERATIVE, Fusion.DEFAULT), ("dense", Mode.DENSE, Fusion.DEFAULT),
            ("hybrid (DBSF)", Mode.HYBRID, Fusion.DBSF), ("hybrid (weighted)", Mode.HYBRID, Fusion.WEIGHTED),
            ("hybrid (learned)", Mode.HYBRID, Fusion.LEARNED))


def calibration_report(engine: Engine, data: str | Path, split: str, tenant: str, out_dir: str | Path, name: str,
                       thresholds: Sequence[float] = THRESHOLDS, beams: int = 100, depth: int = 10) -> dict[str, Any]:
    """ECE, reliability diagram, and precision of the hits each probability threshold keeps, of the
    calibrated probabilities of every retriever and fusion on a split (each query's top ``depth``)."""
    if engine.calibration is None:
        raise ValueError("the index is not calibrated (run `genret calibrate`)")
    queries, relevant = _split(data, split, tenant)
    report: dict[str, Any] = {"split": split, "depth": depth, "retrievers": {}}
    curves = {}
    qids = list(queries)
    for label, mode, fusion in REPORTED:
        probs, labels = [], []
        for s in range(0, len(qids), 16):
            chunk = qids[s : s + 16]
            reqs = [SearchQuery(tenant, queries[q], depth, beams, mode, fusion=fusion)
                    for q in chunk]
            for q, hits in zip(chunk, engine.search(reqs), strict=True):
                for h in hits:
                    probs.append(float(h.probability or 0.0))
                    labels.append(int(h.point_id in relevant.get(q, set())))
        ece, table = expected_calibration_error(probs, labels)
        report["retrievers"][label] = {"ece": ece, "bins": table, "hits": len(probs),
                                       "precision": precision_kept(probs, labels, thresholds)}
        curves[label] = table
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report["png"] = str(_plot(curves, out / f"{name}-reliability.png", name))
    (out / f"{name}-calibration.json").write_text(json.dumps(report, indent=2))
    return report


def _plot(curves: Mapping[str, list[dict[str, float]]], path: Path, title: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect")
    for label, table in curves.items():
        ax.plot([b["confidence"] for b in table], [b["accuracy"] for b in table], marker="o", label=label)
    ax.set_xlabel("calibrated probability (bin mean)")
    ax.set_ylabel("fraction relevant")
    ax.set_title(f"reliability: {title}")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path

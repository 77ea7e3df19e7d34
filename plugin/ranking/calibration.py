"""Calibrated scores: raw retriever scores -> probability of relevance, fit on training queries.

``genret calibrate`` runs the index's training queries through both retrievers, labels every returned
hit by the qrels, and fits logistic models (scikit-learn): generative log-probability alone, dense
cosine alone, both together (the LEARNED fusion, with an "absent" term for a list that did not return
the point), the fused score of WEIGHTED fusion (cosine + w * log-probability, w tuned first for the
best nDCG@10 on the same queries), and AUTO's confidence: whether generative's top hit is relevant,
from its score and its margin over the second hypothesis. They are stored as ``calibration.json`` in the
index directory, so a threshold on ``min_probability`` means the same thing for every query and tenant
of the index.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from genret.ranking.fusion import Candidates, LogisticFusion, tune_weight, weighted
from genret.types import Ranked

log = logging.getLogger(__name__)

CALIBRATION = "calibration.json"
GENERATIVE, DENSE, LEXICAL = "generative", "dense", "lexical"
WEIGHTED = "weighted"  # the fused score of WEIGHTED fusion, calibrated like a retriever's own score
TOP, MARGIN = "top", "margin"  # AUTO's evidence: generative's top score and its lead over the second
LONE_MARGIN = 20.0  # the lead of a top hit with no second hypothesis, in nats
REQUIRED = ("generative", "dense", "hybrid", "weighted", "auto", "score_weights", "auto_min_probability")


@dataclass(frozen=True)
class Calibration:
    generative: LogisticFusion
    dense: LogisticFusion
    hybrid: LogisticFusion  # LEARNED fusion
    weighted: LogisticFusion  # WEIGHTED fusion's fused score -> probability
    auto: LogisticFusion  # generative's top score and margin -> probability that its top hit is relevant
    fusion_weights: Mapping[str, float]  # WEIGHTED fusion: score = sum of weight * raw score
    auto_min_probability: float  # AUTO fuses only when generative's top hit is at least this likely
    fit_on: Mapping[str, Any]

    def probability(self, scored: str, score: float) -> float:
        """``scored``: GENERATIVE, DENSE or WEIGHTED (a fused score)."""
        model = {GENERATIVE: self.generative, DENSE: self.dense, WEIGHTED: self.weighted}[scored]
        return model.probability({scored: Ranked("", score, 1)})

    def top_hit_probability(self, generative: Sequence[tuple[str, float]]) -> float:
        """How likely the top hit of a generative list is relevant, from its score and its margin."""
        return self.auto.probability(confidence_evidence(generative))

    def to_json(self) -> dict[str, Any]:
        return {"generative": self.generative.to_json(), "dense": self.dense.to_json(),
                "hybrid": self.hybrid.to_json(), "weighted": self.weighted.to_json(), "auto": self.auto.to_json(),
                "score_weights": dict(self.fusion_weights), "auto_min_probability": self.auto_min_probability,
                "fit_on": dict(self.fit_on)}

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> Calibration:
        return Calibration(LogisticFusion.from_json(data["generative"]), LogisticFusion.from_json(data["dense"]),
                           LogisticFusion.from_json(data["hybrid"]), LogisticFusion.from_json(data["weighted"]),
                           LogisticFusion.from_json(data["auto"]),
                           {str(k): float(v) for k, v in data["score_weights"].items()},
                           float(data["auto_min_probability"]), dict(data.get("fit_on", {})))


def read_calibration(index_dir: str | Path) -> Calibration | None:
    """The index's calibration; None when it has none, or one without every model this version uses."""
    path = Path(index_dir) / CALIBRATION
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        log.warning("%s lacks %s: the index counts as uncalibrated until `genret calibrate` runs again",
                    path, ", ".join(missing))
        return None
    return Calibration.from_json(data)


def write_calibration(index_dir: str | Path, cal: Calibration) -> Path:
    path = Path(index_dir) / CALIBRATION
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(cal.to_json(), indent=2, sort_keys=True))
    tmp.replace(path)
    return path


def _fit(rows: np.ndarray, labels: np.ndarray, names: Sequence[str]) -> LogisticFusion:
    """rows: (n, 2*len(names)) = per retriever [score if present else 0, 1 if absent else 0]."""
    from sklearn.linear_model import LogisticRegression

    if len(set(labels.tolist())) < 2:
        raise ValueError("calibration needs both relevant and non-relevant hits among the training results")
    model = LogisticRegression(C=10.0, max_iter=1000).fit(rows, labels)
    coef = model.coef_[0]
    return LogisticFusion(float(model.intercept_[0]), {n: float(coef[2 * i]) for i, n in enumerate(names)},
                          {n: float(coef[2 * i + 1]) for i, n in enumerate(names)})


def features(sources: Mapping[str, Ranked], names: Sequence[str]) -> list[float]:
    out: list[float] = []
    for n in names:
        r = sources.get(n)
        present = r is not None and math.isfinite(r.score)
        out += [r.score if present else 0.0, 0.0 if present else 1.0]  # type: ignore[union-attr]
    return out


def confidence_evidence(generative: Sequence[tuple[str, float]]) -> dict[str, Ranked]:
    """AUTO's evidence from a generative list (best first): the top score, and its margin over the second."""
    top = generative[0][1]
    margin = top - generative[1][1] if len(generative) > 1 else LONE_MARGIN
    return {TOP: Ranked("", top, 1), MARGIN: Ranked("", min(margin, LONE_MARGIN), 1)}


def _fit_top_hit(runs: Mapping[str, Candidates], relevant: Mapping[str, set[str]]) -> LogisticFusion:
    """P(generative's top hit is relevant | top score, margin); a constant rate when every top hit is
    relevant or none is."""
    rows, labels = [], []
    for q, cands in runs.items():
        gen = cands.lists.get(GENERATIVE, [])
        if gen:
            rows.append(features(confidence_evidence(gen), [TOP, MARGIN]))
            labels.append(int(gen[0][0] in relevant.get(q, set())))
    if len(set(labels)) < 2:
        rate = (sum(labels) + 0.5) / (len(labels) + 1.0)
        return LogisticFusion(math.log(rate / (1.0 - rate)), {TOP: 0.0, MARGIN: 0.0}, {TOP: 0.0, MARGIN: 0.0})
    return _fit(np.asarray(rows), np.asarray(labels), [TOP, MARGIN])


def fit_calibration(runs: Mapping[str, Candidates], relevant: Mapping[str, set[str]], depth: int,
                    fit_on: Mapping[str, Any]) -> Calibration:
    """runs: query -> both retrievers' ranked lists and complete scores; relevant: query -> relevant point
    ids. The fusion weight is tuned on all candidates; the probability models are fit on the top ``depth``
    hits of each list, and of WEIGHTED fusion with that weight; AUTO's on each query's top generative hit."""
    single: dict[str, tuple[list[list[float]], list[int]]] = {GENERATIVE: ([], []), DENSE: ([], [])}
    both: tuple[list[list[float]], list[int]] = ([], [])
    for q, cands in runs.items():
        rel = relevant.get(q, set())
        union: dict[str, dict[str, Ranked]] = {}
        for name, hits in cands.lists.items():
            for rank, (pid, score) in enumerate(hits[:depth], 1):
                single[name][0].append(features({name: Ranked(pid, score, rank)}, [name]))
                single[name][1].append(int(pid in rel))
                union.setdefault(pid, {})[name] = Ranked(pid, score, rank)
        for pid, sources in union.items():
            both[0].append(features(sources, [GENERATIVE, DENSE]))
            both[1].append(int(pid in rel))
    gen = _fit(np.asarray(single[GENERATIVE][0]), np.asarray(single[GENERATIVE][1]), [GENERATIVE])
    dense = _fit(np.asarray(single[DENSE][0]), np.asarray(single[DENSE][1]), [DENSE])
    hybrid = _fit(np.asarray(both[0]), np.asarray(both[1]), [GENERATIVE, DENSE])
    weight, tried = tune_weight(runs, relevant, GENERATIVE)
    weights = {GENERATIVE: weight, DENSE: 1.0}
    fused: tuple[list[list[float]], list[int]] = ([], [])
    for q, cands in runs.items():
        for f in weighted(cands.lists, cands.scores, weights)[:depth]:
            fused[0].append([f.score, 0.0])
            fused[1].append(int(f.point_id in relevant.get(q, set())))
    scale = _fit(np.asarray(fused[0]), np.asarray(fused[1]), [WEIGHTED])
    return Calibration(gen, dense, hybrid, scale, _fit_top_hit(runs, relevant), weights, 0.5,
                       {**fit_on, "hits": len(both[1]), "relevant_hits": sum(both[1]),
                        "weighted_ndcg_at_10": {str(w): m for w, m in tried.items()}})


def expected_calibration_error(probs: Sequence[float], labels: Sequence[int],
                               bins: int = 10) -> tuple[float, list[dict[str, float]]]:
    """ECE over equal-width probability bins, and the per-bin (confidence, accuracy, count) table."""
    p, y = np.asarray(probs, dtype=float), np.asarray(labels, dtype=float)
    table, ece = [], 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        sel = (p >= lo) & ((p < hi) if b < bins - 1 else (p <= hi))
        if not sel.any():
            continue
        conf, acc = float(p[sel].mean()), float(y[sel].mean())
        ece += sel.sum() / len(p) * abs(conf - acc)
        table.append({"lo": lo, "hi": hi, "confidence": conf, "accuracy": acc, "count": int(sel.sum())})
    return float(ece), table


def precision_kept(probs: Sequence[float], labels: Sequence[int],
                   thresholds: Sequence[float]) -> dict[str, dict[str, float | int | None]]:
    """Per threshold: how many hits have at least that probability, and the fraction of them relevant."""
    out: dict[str, dict[str, float | int | None]] = {}
    for t in thresholds:
        kept = [y for p, y in zip(probs, labels, strict=True) if p >= t]
        out[str(t)] = {"kept": len(kept), "precision": sum(kept) / len(kept) if kept else None}
    return out

"""Combining the generative and dense result lists of one query.

* ``rrf``: reciprocal-rank fusion, score = sum over lists of 1 / (k + rank), rank from 1.
* ``dbsf``: Qdrant's distribution-based score fusion: each list's scores scaled by its own mean +- 3
  standard deviations (sample variance; one score, or equal scores, scale to 0.5), summed over the lists
  (a list that did not return a point adds nothing). It needs no calibration and keeps how far apart a
  list's scores are, which rank fusion drops.
* ``weighted``: weighted score fusion, score = sum over retrievers of w * raw score, over the union of
  the lists with every candidate scored by every retriever (the caller fills in the scores a list did
  not return); ``genret calibrate`` tunes the weights (``tune_weight``).
* ``learned``: a logistic model over both retrievers' scores (fit on training queries, see
  ``genret.ranking.calibration``) gives each candidate a calibrated probability of relevance; a candidate missing
  from a list gets that list's "absent" feature.
Every fused hit keeps where it came from: its rank and raw score in each list.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from genret.types import Ranked

RRF_K = 60


@dataclass
class Fused:
    point_id: str
    score: float
    sources: dict[str, Ranked] = field(default_factory=dict)  # retriever -> its hit


def _ranked(hits: Sequence[tuple[str, float]]) -> list[Ranked]:
    return [Ranked(pid, s, i + 1) for i, (pid, s) in enumerate(hits)]


def _union(lists: Mapping[str, Sequence[tuple[str, float]]]) -> dict[str, Fused]:
    out: dict[str, Fused] = {}
    for name, hits in lists.items():
        for r in _ranked(hits):
            out.setdefault(r.point_id, Fused(r.point_id, 0.0)).sources.setdefault(name, r)
    return out


def _sorted(fused: dict[str, Fused]) -> list[Fused]:
    return sorted(fused.values(), key=lambda f: (-f.score, f.point_id))  # ties by point id: a stable order


def rrf(lists: Mapping[str, Sequence[tuple[str, float]]], k: int = RRF_K) -> list[Fused]:
    """Reciprocal-rank fusion."""
    fused = _union(lists)
    for f in fused.values():
        f.score = sum(1.0 / (k + r.rank) for r in f.sources.values())
    return _sorted(fused)


def dbsf_scale(values: Sequence[float]) -> list[float]:
    """One list's scores on DBSF's scale: (score - low) / (high - low), low and high the mean -+ 3 standard
    deviations (computed in Qdrant's order, so equal sums tie as they tie in Qdrant)."""
    if len(values) < 2:
        return [0.5] * len(values)
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    if var == 0:
        return [0.5] * len(values)
    std = math.sqrt(var)
    low, high = mean - 3 * std, mean + 3 * std
    return [(v - low) / (high - low) for v in values]


def dbsf(lists: Mapping[str, Sequence[tuple[str, float]]]) -> list[Fused]:
    """Distribution-based score fusion, as Qdrant's ``Fusion.DBSF`` computes it."""
    fused = _union(lists)
    for hits in lists.values():
        for (pid, _), scaled in zip(hits, dbsf_scale([s for _, s in hits]), strict=True):
            fused[pid].score += scaled
    return _sorted(fused)


def weighted(lists: Mapping[str, Sequence[tuple[str, float]]], scores: Mapping[str, Mapping[str, float]],
             weights: Mapping[str, float]) -> list[Fused]:
    """Weighted score fusion over the union of ``lists``. ``scores``: retriever -> point id -> raw score
    (at least the union); a point a retriever could not score gets that retriever's lowest score."""
    fused = _union(lists)
    for name, w in weights.items():
        known = scores.get(name, {})
        floor = min(known.values(), default=0.0)
        for f in fused.values():
            f.score += w * known.get(f.point_id, floor)
    return _sorted(fused)


def ndcg_at_10(ranked: Sequence[str], relevant: set[str]) -> float:
    """Binary-relevance nDCG@10 of one ranking."""
    dcg = sum(1.0 / math.log2(i + 2) for i, pid in enumerate(ranked[:10]) if pid in relevant)
    ideal = sum(1.0 / math.log2(i + 2) for i in range(min(10, len(relevant))))
    return dcg / ideal if ideal else 0.0


GRID = (0.0, 0.001, 0.002, 0.005, 0.01, 0.02, 0.03, 0.05, 0.1, 0.2, 0.5, 1.0)


@dataclass(frozen=True)
class Candidates:
    """One query's ranked lists and every retriever's score of every point in their union."""

    lists: Mapping[str, Sequence[tuple[str, float]]]
    scores: Mapping[str, Mapping[str, float]]


def tune_weight(runs: Mapping[str, Candidates], relevant: Mapping[str, set[str]], tuned: str,
                grid: Sequence[float] = GRID) -> tuple[float, dict[float, float]]:
    """The weight of retriever ``tuned`` (the others weigh 1) that maximises mean nDCG@10 of weighted
    score fusion over ``runs`` (query -> candidates); the smallest of equal weights wins. Returns it and
    the mean nDCG@10 of every weight tried."""
    means = {}
    for w in grid:
        per_query = []
        for q, c in runs.items():
            weights = {name: (w if name == tuned else 1.0) for name in c.lists}
            ranked = [f.point_id for f in weighted(c.lists, c.scores, weights)]
            per_query.append(ndcg_at_10(ranked, relevant.get(q, set())))
        means[w] = sum(per_query) / max(1, len(per_query))
    best = max(grid, key=lambda w: (means[w], -w))
    return best, means


@dataclass(frozen=True)
class LogisticFusion:
    """P(relevant) = sigmoid(bias + sum over retrievers of w * score if present else absent)."""

    bias: float
    weights: Mapping[str, float]
    absent: Mapping[str, float]

    def probability(self, sources: Mapping[str, Ranked]) -> float:
        z = self.bias
        for name, w in self.weights.items():
            r = sources.get(name)
            z += w * r.score if r is not None and math.isfinite(r.score) else self.absent[name]
        return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, z))))

    def fuse(self, lists: Mapping[str, Sequence[tuple[str, float]]]) -> list[Fused]:
        fused = _union(lists)
        for f in fused.values():
            f.score = self.probability(f.sources)
        return _sorted(fused)

    def to_json(self) -> dict[str, object]:
        return {"bias": self.bias, "weights": dict(self.weights), "absent": dict(self.absent)}

    @staticmethod
    def from_json(data: Mapping[str, object]) -> LogisticFusion:
        weights = {str(k): float(v) for k, v in dict(data["weights"]).items()}  # type: ignore[call-overload]
        absent = {str(k): float(v) for k, v in dict(data["absent"]).items()}  # type: ignore[call-overload]
        return LogisticFusion(float(data["bias"]), weights, absent)  # type: ignore[arg-type]

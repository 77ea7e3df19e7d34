"""Combining the generative and dense result lists of one query.

* ``rrf``: reciprocal-rank fusion, score = sum over lists of w / (k + rank), rank from 1; every weight
  w is 1 unless given (WEIGHTED fusion: weights tuned by ``genret calibrate``, see ``tune_weights``).
* ``learned``: a logistic model over both retrievers' scores (fit on training queries, see
  ``genret.calibrate``) gives each candidate a calibrated probability of relevance; a candidate missing
  from a list gets that list's "absent" feature.
Every fused hit keeps where it came from: its rank and raw score in each list.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

RRF_K = 60


@dataclass(frozen=True)
class Ranked:
    """One retriever's hit: point id, raw score, 1-based rank."""

    point_id: str
    score: float
    rank: int


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


def rrf(lists: Mapping[str, Sequence[tuple[str, float]]], k: int = RRF_K,
        weights: Mapping[str, float] | None = None) -> list[Fused]:
    """(Weighted) reciprocal-rank fusion; ties broken by point id for a stable order."""
    fused = _union(lists)
    for f in fused.values():
        f.score = sum((weights or {}).get(name, 1.0) / (k + r.rank) for name, r in f.sources.items())
    return sorted(fused.values(), key=lambda f: (-f.score, f.point_id))


def ndcg_at_10(ranked: Sequence[str], relevant: set[str]) -> float:
    """Binary-relevance nDCG@10 of one ranking."""
    dcg = sum(1.0 / math.log2(i + 2) for i, pid in enumerate(ranked[:10]) if pid in relevant)
    ideal = sum(1.0 / math.log2(i + 2) for i in range(min(10, len(relevant))))
    return dcg / ideal if ideal else 0.0


GRID = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)


def tune_weights(runs: Mapping[str, Mapping[str, Sequence[tuple[str, float]]]], relevant: Mapping[str, set[str]],
                 tuned: str, grid: Sequence[float] = GRID) -> tuple[float, dict[float, float]]:
    """The weight of list ``tuned`` (the others weigh 1) that maximises mean nDCG@10 of weighted RRF over
    ``runs`` (query -> list name -> ranked hits); the first of equal weights wins. Returns it and the
    mean nDCG@10 of every weight tried."""
    means = {}
    for w in grid:
        scores = [ndcg_at_10([f.point_id for f in rrf(lists, weights={tuned: w})], relevant.get(q, set()))
                  for q, lists in runs.items()]
        means[w] = sum(scores) / max(1, len(scores))
    best = max(grid, key=lambda w: (means[w], -grid.index(w)))
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
        return sorted(fused.values(), key=lambda f: (-f.score, f.point_id))

    def to_json(self) -> dict[str, object]:
        return {"bias": self.bias, "weights": dict(self.weights), "absent": dict(self.absent)}

    @staticmethod
    def from_json(data: Mapping[str, object]) -> LogisticFusion:
        weights = {str(k): float(v) for k, v in dict(data["weights"]).items()}  # type: ignore[call-overload]
        absent = {str(k): float(v) for k, v in dict(data["absent"]).items()}  # type: ignore[call-overload]
        return LogisticFusion(float(data["bias"]), weights, absent)  # type: ignore[arg-type]

"""Combining the generative and dense result lists of one query.

* ``rrf``: reciprocal-rank fusion, score = sum over lists of 1 / (k + rank), rank from 1.
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


def rrf(lists: Mapping[str, Sequence[tuple[str, float]]], k: int = RRF_K) -> list[Fused]:
    """Reciprocal-rank fusion; ties broken by point id for a stable order."""
    fused = _union(lists)
    for f in fused.values():
        f.score = sum(1.0 / (k + r.rank) for r in f.sources.values())
    return sorted(fused.values(), key=lambda f: (-f.score, f.point_id))


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

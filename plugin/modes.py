"""From each retriever's ranked list to one query's answer, per search mode.

GENERATIVE and DENSE return their own list. HYBRID fuses both (RRF; WEIGHTED: RRF with the generative
weight tuned by calibration; the calibrated LEARNED model; or RESCORE: only the generative candidates,
re-ranked with their dense similarity as Qdrant computes it).
AUTO routes: it fuses when the generative retriever is confident (calibrated probability of its top hit,
or without calibration, its top hit also among the dense results) and answers with dense otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

from genret.calibrate import DENSE, GENERATIVE, Calibration
from genret.errors import FailedPrecondition
from genret.fusion import Fused, Ranked, rrf


class Mode(Enum):
    GENERATIVE = "generative"
    DENSE = "dense"
    HYBRID = "hybrid"
    AUTO = "auto"


class Fusion(Enum):
    DEFAULT = "default"  # WEIGHTED when the index is calibrated, else RRF
    RRF = "rrf"
    LEARNED = "learned"
    RESCORE = "rescore"
    WEIGHTED = "weighted"


@dataclass(frozen=True)
class Answer:
    point_id: str
    score: float
    retriever: str
    sources: Mapping[str, Ranked]
    probability: float | None


Lists = Mapping[str, Sequence[tuple[str, float]]]
Rescore = Callable[[Sequence[str]], list[tuple[str, float]]]  # point ids -> [(point id, dense score)] ranked


def _single(name: str, hits: Sequence[tuple[str, float]], cal: Calibration | None) -> list[Answer]:
    out = []
    for rank, (pid, score) in enumerate(hits, 1):
        prob = cal.probability(name, score) if cal is not None else None
        out.append(Answer(pid, score, name, {name: Ranked(pid, score, rank)}, prob))
    return out


def _fused(fused: Sequence[Fused], cal: Calibration | None) -> list[Answer]:
    return [Answer(f.point_id, f.score, "hybrid", f.sources, cal.hybrid.probability(f.sources) if cal else None)
            for f in fused]


def fuse(lists: Lists, fusion: Fusion, cal: Calibration | None, rescore: Rescore) -> list[Answer]:
    if fusion == Fusion.DEFAULT:
        fusion = Fusion.WEIGHTED if cal is not None else Fusion.RRF
    if fusion == Fusion.WEIGHTED:
        return _fused(rrf(lists, weights=cal.fusion_weights if cal is not None else None), cal)
    if fusion == Fusion.LEARNED:
        if cal is None:
            raise FailedPrecondition("LEARNED fusion needs a calibrated index (run `genret calibrate`)")
        return _fused(cal.hybrid.fuse(lists), cal)
    if fusion == Fusion.RESCORE:
        gen = lists[GENERATIVE]
        rescored = {GENERATIVE: gen, DENSE: rescore([pid for pid, _ in gen])}
        return _fused(cal.hybrid.fuse(rescored) if cal is not None else rrf(rescored), cal)
    return _fused(rrf(lists), cal)


def answer(mode: Mode, fusion: Fusion, lists: Lists, cal: Calibration | None, rescore: Rescore) -> list[Answer]:
    """All candidates of one query for ``mode``, best first (the caller cuts to top_k and thresholds)."""
    if mode == Mode.GENERATIVE:
        return _single(GENERATIVE, lists[GENERATIVE], cal)
    if mode == Mode.DENSE:
        return _single(DENSE, lists[DENSE], cal)
    if mode == Mode.HYBRID:
        return fuse(lists, fusion, cal, rescore)
    gen, dense = lists[GENERATIVE], lists[DENSE]
    if not gen:
        return _single(DENSE, dense, cal)
    top = gen[0][0]
    agrees = any(pid == top for pid, _ in dense)
    confident = cal.probability(GENERATIVE, gen[0][1]) >= cal.auto_min_probability if cal is not None else agrees
    if confident and agrees:
        return fuse(lists, fusion, cal, rescore)
    return _single(DENSE, dense, cal)

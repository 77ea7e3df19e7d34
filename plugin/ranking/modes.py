"""From each retriever's ranked list to one query's answer, per search mode.

GENERATIVE and DENSE return their own list. HYBRID fuses both: DBSF or RRF (with, when given, a third
list: BM25 over the tenant's own documents); WEIGHTED: weighted score fusion,
dense cosine + w * generative log-probability with w tuned by calibration, where every candidate of
either list is scored by both retrievers (Qdrant scores the generative candidates by id, the model
scores the dense candidates' docids); the calibrated LEARNED model; or RESCORE: only the generative
candidates, re-ranked with their dense similarity as Qdrant computes it.
AUTO routes: it fuses when generative's top hit is also among the dense results and, on a calibrated
index, likely relevant given its beam score and its margin over the second hypothesis; otherwise it
answers without the generative list: dense, fused with the lexical list when the query has one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from genret.errors import FailedPrecondition
from genret.ranking.calibration import DENSE, GENERATIVE, LEXICAL, WEIGHTED, Calibration
from genret.ranking.fusion import Fused, dbsf, rrf, weighted
from genret.types import Fusion, Mode, Ranked


@dataclass(frozen=True)
class Answer:
    point_id: str
    score: float
    retriever: str
    sources: Mapping[str, Ranked]
    probability: float | None


Lists = Mapping[str, Sequence[tuple[str, float]]]
Scorer = Callable[[Sequence[str]], dict[str, float]]  # point ids -> one retriever's score of each it can score


def _single(name: str, hits: Sequence[tuple[str, float]], cal: Calibration | None) -> list[Answer]:
    out = []
    for rank, (pid, score) in enumerate(hits, 1):
        prob = cal.probability(name, score) if cal is not None else None
        out.append(Answer(pid, score, name, {name: Ranked(pid, score, rank)}, prob))
    return out


def _fused(fused: Sequence[Fused], cal: Calibration | None, weighted_scores: bool = False) -> list[Answer]:
    """Fused hits as answers; the probability of a WEIGHTED score comes from its own calibrated scale,
    any other from the LEARNED model of its sources."""
    def prob(f: Fused) -> float | None:
        if cal is None:
            return None
        return cal.probability(WEIGHTED, f.score) if weighted_scores else cal.hybrid.probability(f.sources)

    return [Answer(f.point_id, f.score, "hybrid", f.sources, prob(f)) for f in fused]


# The fusions that read every list given (the lexical one too), each by its function of the lists.
LIST_FUSIONS: Mapping[Fusion, Callable[[Lists], list[Fused]]] = {Fusion.DBSF: dbsf, Fusion.RRF: rrf}


def resolved(fusion: Fusion) -> Fusion:
    """The fusion a query asking for ``fusion`` gets: DEFAULT is DBSF, on a calibrated index too."""
    return Fusion.DBSF if fusion == Fusion.DEFAULT else fusion


def complete(lists: Lists, scorers: Mapping[str, Scorer]) -> dict[str, dict[str, float]]:
    """Every retriever's score of every point in the union of the lists: its own list's scores, plus
    what its scorer gives for the points it did not return."""
    union = list(dict.fromkeys(pid for hits in lists.values() for pid, _ in hits))
    out = {}
    for name, hits in lists.items():
        own = dict(hits)
        out[name] = {**own, **scorers[name]([pid for pid in union if pid not in own])}
    return out


def fuse(lists: Lists, fusion: Fusion, cal: Calibration | None, scorers: Mapping[str, Scorer]) -> list[Answer]:
    """DBSF and RRF fuse every list given (the lexical one too); the calibrated fusions and RESCORE read
    the generative and dense lists only."""
    fusion = resolved(fusion)
    if fusion not in LIST_FUSIONS:
        lists = {name: lists[name] for name in (GENERATIVE, DENSE)}
    if fusion in (Fusion.WEIGHTED, Fusion.LEARNED):
        if cal is None:
            raise FailedPrecondition(f"{fusion.name} fusion needs a calibrated index (run `genret calibrate`)")
        if fusion == Fusion.WEIGHTED:
            return _fused(weighted(lists, complete(lists, scorers), cal.fusion_weights), cal, weighted_scores=True)
        return _fused(cal.hybrid.fuse(lists), cal)
    if fusion == Fusion.RESCORE:
        gen = lists[GENERATIVE]
        dense = scorers[DENSE]([pid for pid, _ in gen])
        rescored = {GENERATIVE: gen, DENSE: sorted(dense.items(), key=lambda h: (-h[1], h[0]))}
        return _fused(cal.hybrid.fuse(rescored) if cal is not None else rrf(rescored), cal)
    return _fused(LIST_FUSIONS[fusion](lists), cal)


def answer(mode: Mode, fusion: Fusion, lists: Lists, cal: Calibration | None,
           scorers: Mapping[str, Scorer]) -> list[Answer]:
    """All candidates of one query for ``mode``, best first (the caller cuts to top_k and thresholds)."""
    if mode == Mode.GENERATIVE:
        return _single(GENERATIVE, lists[GENERATIVE], cal)
    if mode == Mode.DENSE:
        return _single(DENSE, lists[DENSE], cal)
    if mode == Mode.HYBRID:
        return fuse(lists, fusion, cal, scorers)
    gen, dense = lists[GENERATIVE], lists[DENSE]
    agrees = bool(gen) and any(pid == gen[0][0] for pid, _ in dense)
    if agrees and (cal is None or cal.top_hit_probability(gen) >= cal.auto_min_probability):
        return fuse(lists, fusion, cal, scorers)
    return _without_generative(lists, fusion, cal)


def _without_generative(lists: Lists, fusion: Fusion, cal: Calibration | None) -> list[Answer]:
    """AUTO's answer when it does not trust the generative list: dense, fused with the lexical list by
    DBSF or RRF when the query has one."""
    fuse_lists = LIST_FUSIONS.get(resolved(fusion))
    if LEXICAL not in lists or fuse_lists is None:
        return _single(DENSE, lists[DENSE], cal)
    return _fused(fuse_lists({DENSE: lists[DENSE], LEXICAL: lists[LEXICAL]}), cal)

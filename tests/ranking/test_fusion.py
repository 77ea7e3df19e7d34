"""Fusion arithmetic and mode routing on fixed inputs."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from qdrant_client import models
from qdrant_client.hybrid.fusion import distribution_based_score_fusion

from genret.errors import FailedPrecondition
from genret.ranking.calibration import (
    CALIBRATION,
    LONE_MARGIN,
    WEIGHTED,
    Calibration,
    confidence_evidence,
    expected_calibration_error,
    fit_calibration,
    precision_kept,
    read_calibration,
    write_calibration,
)
from genret.ranking.fusion import Candidates, LogisticFusion, dbsf, ndcg_at_10, rrf, tune_weight, weighted
from genret.ranking.modes import answer, complete
from genret.types import Fusion, Mode, Ranked

GEN = [("a", -0.1), ("b", -1.0), ("c", -2.0)]
DENSE = [("c", 0.9), ("a", 0.8), ("d", 0.7)]


def test_rrf_sums_reciprocal_ranks() -> None:
    fused = rrf({"generative": GEN, "dense": DENSE}, k=60)
    scores = {f.point_id: f.score for f in fused}
    assert scores["a"] == pytest.approx(1 / 61 + 1 / 62)
    assert scores["c"] == pytest.approx(1 / 63 + 1 / 61)
    assert scores["b"] == pytest.approx(1 / 62) and scores["d"] == pytest.approx(1 / 63)
    assert [f.point_id for f in fused] == ["a", "c", "b", "d"]
    assert fused[0].sources["dense"] == Ranked("a", 0.8, 2)


def test_dbsf_scales_each_list_by_its_mean_and_three_deviations() -> None:
    """Generative's top hit leads by far, so DBSF ranks it above two points both lists return near their
    bottom, where rank fusion puts it below them."""
    gen, dense = [("a", -0.1), ("b", -5.0), ("c", -5.1)], [("c", 0.9), ("b", 0.89), ("d", 0.2)]

    def scaled(hits: list[tuple[str, float]]) -> dict[str, float]:
        mean, std = statistics.mean(s for _, s in hits), statistics.stdev(s for _, s in hits)
        return {pid: (s - (mean - 3 * std)) / (6 * std) for pid, s in hits}

    g, d = scaled(gen), scaled(dense)
    fused = dbsf({"generative": gen, "dense": dense})
    assert {f.point_id: f.score for f in fused} == pytest.approx(
        {"a": g["a"], "b": g["b"] + d["b"], "c": g["c"] + d["c"], "d": d["d"]})
    assert [f.point_id for f in fused] == ["b", "c", "a", "d"]
    assert [f.point_id for f in rrf({"generative": gen, "dense": dense})] == ["c", "b", "a", "d"]
    assert fused[0].sources == {"generative": Ranked("b", -5.0, 2), "dense": Ranked("b", 0.89, 2)}
    one = dbsf({"generative": [("a", -3.0)], "dense": [("a", 0.4), ("b", 0.4)]})  # one score, equal scores: 0.5
    assert {f.point_id: f.score for f in one} == {"a": 1.0, "b": 0.5}


@settings(max_examples=200, deadline=None)
@given(st.lists(st.dictionaries(st.integers(0, 30), st.floats(-5, 5, allow_nan=False), max_size=12),
                min_size=1, max_size=4))
def test_dbsf_is_qdrants(lists: list[dict[int, float]]) -> None:
    ranked = [sorted(x.items(), key=lambda h: -h[1]) for x in lists]
    ours = dbsf({str(i): [(str(pid), s) for pid, s in hits] for i, hits in enumerate(ranked)})
    theirs = distribution_based_score_fusion(
        [[models.ScoredPoint(id=pid, version=0, score=s) for pid, s in hits] for hits in ranked], limit=10_000)
    want = {str(p.id): p.score for p in theirs}
    assert {f.point_id: f.score for f in ours} == pytest.approx(want, rel=1e-9, abs=1e-12)


# every retriever's score of every point in the union of GEN and DENSE
FULL = {"generative": {"a": -0.1, "b": -1.0, "c": -2.0, "d": -4.0}, "dense": {"a": 0.8, "b": 0.5, "c": 0.9, "d": 0.7}}


def test_weighted_score_fusion_sums_weighted_scores() -> None:
    fused = weighted({"generative": GEN, "dense": DENSE}, FULL, {"generative": 0.1, "dense": 1.0})
    scores = {f.point_id: f.score for f in fused}
    assert scores["a"] == pytest.approx(0.8 - 0.01) and scores["c"] == pytest.approx(0.9 - 0.2)
    assert scores["b"] == pytest.approx(0.5 - 0.1) and scores["d"] == pytest.approx(0.7 - 0.4)
    assert [f.point_id for f in fused] == ["a", "c", "b", "d"]
    assert fused[0].sources == {"generative": Ranked("a", -0.1, 1), "dense": Ranked("a", 0.8, 2)}
    only_dense = weighted({"generative": GEN, "dense": DENSE}, FULL, {"generative": 0.0, "dense": 1.0})
    assert [f.point_id for f in only_dense] == ["c", "a", "d", "b"]  # weight 0: dense order
    # a point a retriever could not score gets that retriever's lowest score
    partial = {"generative": {"a": -0.1, "b": -1.0, "c": -2.0}, "dense": FULL["dense"]}
    scores = {f.point_id: f.score for f in weighted({"generative": GEN, "dense": DENSE}, partial,
                                                     {"generative": 1.0, "dense": 1.0})}
    assert scores["d"] == pytest.approx(0.7 - 2.0)


def test_complete_asks_each_retriever_only_for_what_it_did_not_return() -> None:
    asked: dict[str, list[str]] = {}

    def scorer(name: str):  # type: ignore[no-untyped-def]
        def score(ids):  # type: ignore[no-untyped-def]
            asked[name] = list(ids)
            return {i: FULL[name][i] for i in ids}
        return score

    full = complete({"generative": GEN, "dense": DENSE}, {n: scorer(n) for n in FULL})
    assert asked == {"generative": ["d"], "dense": ["b"]} and full == FULL


def test_ndcg_and_weight_tuning() -> None:
    assert ndcg_at_10(["x", "r"], {"r"}) == pytest.approx(1 / math.log2(3))
    assert ndcg_at_10(["r", "s"], {"r", "s"}) == pytest.approx(1.0) and ndcg_at_10([], {"r"}) == 0.0
    # dense ranks the relevant point 3rd, generative is sure of it: a large enough weight lifts it to 1st
    lists = {"generative": [("r", -0.1), ("x", -5.0)], "dense": [("x", 0.9), ("y", 0.8), ("r", 0.7)]}
    scores = {"generative": {"r": -0.1, "x": -5.0, "y": -6.0}, "dense": {"x": 0.9, "y": 0.8, "r": 0.7}}
    best, tried = tune_weight({"q": Candidates(lists, scores)}, {"q": {"r"}}, "generative", grid=(0.0, 0.01, 0.1, 1.0))
    assert tried[0.0] == pytest.approx(0.5) and tried[0.01] == pytest.approx(0.5) and tried[0.1] == pytest.approx(1.0)
    assert best == 0.1  # the smallest of the best weights
    # generative wrong: weight 0 (dense alone) is best
    wrong = {"generative": {"r": -5.0, "x": -0.1, "y": -6.0}, "dense": scores["dense"]}
    lists = {"generative": [("x", -0.1)], "dense": [("r", 0.9), ("x", 0.8)]}
    assert tune_weight({"q": Candidates(lists, wrong)}, {"q": {"r"}}, "generative", grid=(0.0, 1.0, 5.0))[0] == 0.0


def test_logistic_fusion_uses_absent_terms() -> None:
    model = LogisticFusion(bias=-1.0, weights={"generative": 2.0, "dense": 3.0}, absent={"generative": -5.0, "dense": -0.5})
    both = model.probability({"generative": Ranked("a", -0.1, 1), "dense": Ranked("a", 0.8, 2)})
    assert both == pytest.approx(1 / (1 + math.exp(-(-1.0 - 0.2 + 2.4))))
    only_dense = model.probability({"dense": Ranked("d", 0.7, 3)})
    assert only_dense == pytest.approx(1 / (1 + math.exp(-(-1.0 - 5.0 + 2.1))))
    assert [f.point_id for f in model.fuse({"generative": GEN, "dense": DENSE})][0] in {"a", "c"}
    assert LogisticFusion.from_json(model.to_json()) == model


def calibrated() -> Calibration:
    lists = {f"q{i}": {"generative": [(f"r{i}", -0.1), (f"n{i}", -3.0)], "dense": [(f"r{i}", 0.9), (f"m{i}", 0.2)]}
             for i in range(20)}
    lists["q0"]["generative"] = [("n0", -0.2), ("r0", -2.5)]  # some noise so both classes overlap
    runs = {q: Candidates(ls, {name: dict(hits) for name, hits in ls.items()}) for q, ls in lists.items()}
    return fit_calibration(runs, {f"q{i}": {f"r{i}"} for i in range(20)}, 10, {"test": True})


def test_fitted_calibration_orders_probabilities_and_round_trips() -> None:
    cal = calibrated()
    assert cal.probability("generative", -0.1) > cal.probability("generative", -3.0)
    assert cal.probability("dense", 0.9) > cal.probability("dense", 0.2)
    assert cal.probability(WEIGHTED, 0.9) > cal.probability(WEIGHTED, -2.0)
    assert Calibration.from_json(cal.to_json()) == cal


def test_calibration_without_a_weighted_model_counts_as_none(tmp_path: Path) -> None:
    cal = calibrated()
    write_calibration(tmp_path, cal)
    assert read_calibration(tmp_path) == cal
    older = {k: v for k, v in cal.to_json().items() if k != "weighted"}
    (tmp_path / CALIBRATION).write_text(json.dumps(older))
    assert read_calibration(tmp_path) is None  # uncalibrated until `genret calibrate` runs again


def test_precision_of_the_hits_each_threshold_keeps() -> None:
    probs, labels = [0.9, 0.6, 0.35, 0.3, 0.05], [1, 0, 1, 1, 0]
    kept = precision_kept(probs, labels, (0.1, 0.35, 0.5, 0.95))
    assert kept == {"0.1": {"kept": 4, "precision": 0.75}, "0.35": {"kept": 3, "precision": pytest.approx(2 / 3)},
                    "0.5": {"kept": 2, "precision": 0.5}, "0.95": {"kept": 0, "precision": None}}


def test_modes_route_and_fuse() -> None:
    lists = {"generative": GEN, "dense": DENSE}
    scorers = {name: (lambda ids, n=name: {i: FULL[n][i] for i in ids}) for name in FULL}
    assert [a.point_id for a in answer(Mode.GENERATIVE, Fusion.DEFAULT, lists, None, scorers)] == ["a", "b", "c"]
    assert [a.point_id for a in answer(Mode.DENSE, Fusion.DEFAULT, lists, None, scorers)] == ["c", "a", "d"]
    hybrid = answer(Mode.HYBRID, Fusion.DEFAULT, lists, None, scorers)  # uncalibrated: DBSF
    assert [(a.point_id, a.score) for a in hybrid] == [(f.point_id, f.score) for f in dbsf(lists)]
    assert [a.point_id for a in hybrid] == ["a", "c", "b", "d"] and hybrid[0].retriever == "hybrid"
    assert set(hybrid[0].sources) == {"generative", "dense"}
    for fusion in (Fusion.LEARNED, Fusion.WEIGHTED):
        with pytest.raises(FailedPrecondition):
            answer(Mode.HYBRID, fusion, lists, None, scorers)
    rescored = answer(Mode.HYBRID, Fusion.RESCORE, lists, None, scorers)
    assert {a.point_id for a in rescored} == {"a", "b", "c"}  # only generative candidates
    # AUTO without calibration: fuse when generative's top hit is among dense results, else dense alone.
    assert answer(Mode.AUTO, Fusion.DEFAULT, lists, None, scorers)[0].retriever == "hybrid"
    disagree = {"generative": [("z", -0.1)], "dense": DENSE}
    assert [a.retriever for a in answer(Mode.AUTO, Fusion.DEFAULT, disagree, None, scorers)] == ["dense"] * 3
    cal = calibrated()
    default = answer(Mode.HYBRID, Fusion.DEFAULT, lists, cal, scorers)  # DBSF on a calibrated index too
    assert [(a.point_id, a.score) for a in default] == [(f.point_id, f.score) for f in dbsf(lists)]
    # a DBSF hit's probability is the LEARNED model's of its generative and dense scores
    assert [a.probability for a in default] == [cal.hybrid.probability(a.sources) for a in default]
    fused = answer(Mode.HYBRID, Fusion.WEIGHTED, lists, cal, scorers)
    assert [a.point_id for a in fused] == [f.point_id for f in weighted(lists, FULL, cal.fusion_weights)]
    # a WEIGHTED hit's probability is its fused score's, so it falls along the ranking
    assert [a.probability for a in fused] == [cal.probability(WEIGHTED, a.score) for a in fused]
    assert [a.probability for a in fused] == sorted((a.probability for a in fused), reverse=True)
    probs = [a.probability for a in answer(Mode.HYBRID, Fusion.LEARNED, lists, cal, scorers)]
    assert all(p is not None and 0 <= p <= 1 for p in probs) and probs == sorted(probs, reverse=True)


def test_dbsf_and_rrf_fuse_the_lexical_list_and_calibrated_fusions_leave_it_out() -> None:
    lexical = [("d", 7.0), ("e", 5.0)]
    lists = {"generative": GEN, "dense": DENSE, "lexical": lexical}
    scorers = {name: (lambda ids, n=name: {i: FULL[n][i] for i in ids}) for name in FULL}  # none for lexical
    three = answer(Mode.HYBRID, Fusion.RRF, lists, None, scorers)
    assert [(a.point_id, a.score) for a in three] == [(f.point_id, f.score) for f in rrf(lists)]
    assert [a.point_id for a in three][:2] == ["a", "c"] and "e" in {a.point_id for a in three}
    assert set(next(a for a in three if a.point_id == "d").sources) == {"dense", "lexical"}
    for fusion in (Fusion.DBSF, Fusion.DEFAULT):  # uncalibrated, DEFAULT is DBSF
        got = answer(Mode.HYBRID, fusion, lists, None, scorers)
        assert [(a.point_id, a.score) for a in got] == [(f.point_id, f.score) for f in dbsf(lists)]
        assert "e" in {a.point_id for a in got}
    # AUTO not trusting the generative list answers with the others: dense fused with the lexical list.
    distrust = {**lists, "generative": [("z", -0.1)]}
    rest = {"dense": DENSE, "lexical": lexical}
    for fusion, fuse in ((Fusion.DEFAULT, dbsf), (Fusion.RRF, rrf)):
        got = answer(Mode.AUTO, fusion, distrust, None, scorers)
        assert [(a.point_id, a.score) for a in got] == [(f.point_id, f.score) for f in fuse(rest)]
        assert all("generative" not in a.sources for a in got) and "e" in {a.point_id for a in got}
    assert [a.retriever for a in answer(Mode.AUTO, Fusion.WEIGHTED, distrust, calibrated(), scorers)] == ["dense"] * 3
    two = {"generative": GEN, "dense": DENSE}
    cal = calibrated()
    for fusion in (Fusion.WEIGHTED, Fusion.LEARNED, Fusion.RESCORE):
        got = answer(Mode.HYBRID, fusion, lists, cal, scorers)
        assert [a.point_id for a in got] == [a.point_id for a in answer(Mode.HYBRID, fusion, two, cal, scorers)]
        assert all("lexical" not in a.sources for a in got)


def test_expected_calibration_error() -> None:
    ece, table = expected_calibration_error([0.1, 0.1, 0.9, 0.9], [0, 0, 1, 1])
    assert ece == pytest.approx(0.1) and [b["count"] for b in table] == [2, 2]
    assert expected_calibration_error([0.5, 0.5], [0, 1])[0] == pytest.approx(0.0)


def test_auto_routes_on_the_top_hits_margin() -> None:
    """Top hits that lead the second hypothesis by 3 nats are relevant, those that lead by 0.1 are not;
    every top score is the same, so only the margin can tell them apart."""
    lists, relevant = {}, {}
    for i in range(20):
        sure = i % 2 == 0
        lists[f"q{i}"] = {"generative": [(f"t{i}", -0.5), (f"s{i}", -3.5 if sure else -0.6)],
                          "dense": [(f"t{i}", 0.8), (f"d{i}", 0.7)]}
        relevant[f"q{i}"] = {f"t{i}"} if sure else {f"d{i}"}
    runs = {q: Candidates(ls, {name: dict(hits) for name, hits in ls.items()}) for q, ls in lists.items()}
    cal = fit_calibration(runs, relevant, 10, {"test": True})
    wide, narrow = [("a", -0.5), ("b", -3.5)], [("a", -0.5), ("b", -0.6)]
    assert cal.top_hit_probability(wide) > 0.5 > cal.top_hit_probability(narrow)
    assert confidence_evidence([("a", -0.5)])["margin"].score == LONE_MARGIN
    dense = [("a", 0.8), ("c", 0.7)]
    scorers = {"generative": lambda ids: dict.fromkeys(ids, -9.0), "dense": lambda ids: dict.fromkeys(ids, 0.1)}
    routed = {name: answer(Mode.AUTO, Fusion.DEFAULT, {"generative": gen, "dense": dense}, cal, scorers)[0].retriever
              for name, gen in (("wide", wide), ("narrow", narrow))}
    assert routed == {"wide": "hybrid", "narrow": "dense"}


def test_auto_confidence_is_the_observed_rate_when_every_top_hit_is_relevant() -> None:
    lists = {f"q{i}": {"generative": [(f"t{i}", -0.5 - i / 10), (f"s{i}", -3.0)],
                       "dense": [(f"d{i}", 0.8), (f"t{i}", 0.7)]} for i in range(20)}
    runs = {q: Candidates(ls, {name: dict(hits) for name, hits in ls.items()}) for q, ls in lists.items()}
    cal = fit_calibration(runs, {f"q{i}": {f"t{i}"} for i in range(20)}, 10, {"test": True})
    for gen in ([("a", -9.0), ("b", -9.1)], [("a", -0.1)]):
        assert cal.top_hit_probability(gen) == pytest.approx(20.5 / 21)

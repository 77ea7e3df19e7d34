"""Fusion arithmetic and mode routing on fixed inputs."""

from __future__ import annotations

import math

import pytest

from genret.calibrate import Calibration, expected_calibration_error, fit_calibration
from genret.errors import FailedPrecondition
from genret.fusion import LogisticFusion, Ranked, ndcg_at_10, rrf, tune_weights
from genret.modes import Fusion, Mode, answer

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


def test_weighted_rrf_scales_each_list() -> None:
    fused = rrf({"generative": GEN, "dense": DENSE}, k=60, weights={"generative": 0.5})
    scores = {f.point_id: f.score for f in fused}
    assert scores["a"] == pytest.approx(0.5 / 61 + 1 / 62) and scores["c"] == pytest.approx(0.5 / 63 + 1 / 61)
    assert [f.point_id for f in fused] == ["c", "a", "d", "b"]
    only_dense = rrf({"generative": GEN, "dense": DENSE}, weights={"generative": 0.0})
    assert [f.point_id for f in only_dense][:3] == ["c", "a", "d"]  # weight 0: dense order


def test_ndcg_and_weight_tuning() -> None:
    assert ndcg_at_10(["x", "r"], {"r"}) == pytest.approx(1 / math.log2(3))
    assert ndcg_at_10(["r", "s"], {"r", "s"}) == pytest.approx(1.0) and ndcg_at_10([], {"r"}) == 0.0
    # dense ranks the relevant point 3rd, generative 1st: any weight >= some threshold helps
    runs = {"q": {"generative": [("r", -0.1), ("x", -1.0)], "dense": [("x", 0.9), ("y", 0.8), ("r", 0.7)]}}
    best, tried = tune_weights(runs, {"q": {"r"}}, "generative", grid=(0.0, 0.5, 1.0, 2.0))
    assert tried[0.0] == pytest.approx(0.5) and tried[2.0] == pytest.approx(1.0) and best == 2.0
    # generative wrong: weight 0 (dense alone) is best
    runs = {"q": {"generative": [("x", -0.1)], "dense": [("r", 0.9), ("x", 0.8)]}}
    assert tune_weights(runs, {"q": {"r"}}, "generative", grid=(0.0, 1.0, 5.0))[0] == 0.0


def test_logistic_fusion_uses_absent_terms() -> None:
    model = LogisticFusion(bias=-1.0, weights={"generative": 2.0, "dense": 3.0}, absent={"generative": -5.0, "dense": -0.5})
    both = model.probability({"generative": Ranked("a", -0.1, 1), "dense": Ranked("a", 0.8, 2)})
    assert both == pytest.approx(1 / (1 + math.exp(-(-1.0 - 0.2 + 2.4))))
    only_dense = model.probability({"dense": Ranked("d", 0.7, 3)})
    assert only_dense == pytest.approx(1 / (1 + math.exp(-(-1.0 - 5.0 + 2.1))))
    assert [f.point_id for f in model.fuse({"generative": GEN, "dense": DENSE})][0] in {"a", "c"}
    assert LogisticFusion.from_json(model.to_json()) == model


def calibrated() -> Calibration:
    runs = {f"q{i}": {"generative": [(f"r{i}", -0.1), (f"n{i}", -3.0)], "dense": [(f"r{i}", 0.9), (f"m{i}", 0.2)]}
            for i in range(20)}
    runs["q0"]["generative"] = [("n0", -0.2), ("r0", -2.5)]  # some noise so both classes overlap
    return fit_calibration(runs, {f"q{i}": {f"r{i}"} for i in range(20)}, {"test": True})


def test_fitted_calibration_orders_probabilities_and_round_trips() -> None:
    cal = calibrated()
    assert cal.probability("generative", -0.1) > cal.probability("generative", -3.0)
    assert cal.probability("dense", 0.9) > cal.probability("dense", 0.2)
    assert Calibration.from_json(cal.to_json()) == cal


def test_modes_route_and_fuse() -> None:
    lists = {"generative": GEN, "dense": DENSE}
    no_rescore = lambda ids: []  # noqa: E731
    assert [a.point_id for a in answer(Mode.GENERATIVE, Fusion.DEFAULT, lists, None, no_rescore)] == ["a", "b", "c"]
    assert [a.point_id for a in answer(Mode.DENSE, Fusion.DEFAULT, lists, None, no_rescore)] == ["c", "a", "d"]
    hybrid = answer(Mode.HYBRID, Fusion.DEFAULT, lists, None, no_rescore)  # uncalibrated: RRF
    assert [a.point_id for a in hybrid] == ["a", "c", "b", "d"] and hybrid[0].retriever == "hybrid"
    assert set(hybrid[0].sources) == {"generative", "dense"}
    with pytest.raises(FailedPrecondition):
        answer(Mode.HYBRID, Fusion.LEARNED, lists, None, no_rescore)
    rescored = answer(Mode.HYBRID, Fusion.RESCORE, lists, None,
                      lambda ids: sorted([(i, {"a": 0.1, "b": 0.95, "c": 0.5}[i]) for i in ids], key=lambda x: -x[1]))
    assert {a.point_id for a in rescored} == {"a", "b", "c"}  # only generative candidates
    # AUTO without calibration: fuse when generative's top hit is among dense results, else dense alone.
    assert answer(Mode.AUTO, Fusion.DEFAULT, lists, None, no_rescore)[0].retriever == "hybrid"
    disagree = {"generative": [("z", -0.1)], "dense": DENSE}
    assert [a.retriever for a in answer(Mode.AUTO, Fusion.DEFAULT, disagree, None, no_rescore)] == ["dense"] * 3
    cal = calibrated()
    weighted = answer(Mode.HYBRID, Fusion.DEFAULT, lists, cal, no_rescore)  # calibrated default: WEIGHTED
    assert [a.point_id for a in weighted] == [f.point_id for f in rrf(lists, weights=cal.fusion_weights)]
    probs = [a.probability for a in answer(Mode.HYBRID, Fusion.LEARNED, lists, cal, no_rescore)]
    assert all(p is not None and 0 <= p <= 1 for p in probs) and probs == sorted(probs, reverse=True)


def test_expected_calibration_error() -> None:
    ece, table = expected_calibration_error([0.1, 0.1, 0.9, 0.9], [0, 0, 1, 1])
    assert ece == pytest.approx(0.1) and [b["count"] for b in table] == [2, 2]
    assert expected_calibration_error([0.5, 0.5], [0, 1])[0] == pytest.approx(0.0)

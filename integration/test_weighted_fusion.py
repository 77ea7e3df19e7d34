"""Calibration and WEIGHTED fusion on the real stack: every candidate of either list is scored by both
retrievers (Qdrant by id under the tenant filter, the model by teacher forcing) and the fused score is
the weighted sum of exactly the scores each retriever gives on its own."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from genret.evaluation.reliability import THRESHOLDS, calibrate_index, calibration_report
from genret.ranking.calibration import CALIBRATION, DENSE, GENERATIVE, Calibration
from genret.store import point_id_for
from genret.types import Fusion, Mode, SearchQuery

from .conftest import N_DOCS, OTHER, TENANT, Stack
from .test_tenant_filter import Recorder, reads_only

QUERY = "supersonic flow over wings"


@pytest.fixture(scope="module")
def calibration(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Calibration]:
    """The stack calibrated once on its training queries (the titles); uncalibrated again after the module."""
    data = tmp_path_factory.mktemp("beir")
    (data / "qrels").mkdir(parents=True)
    (data / "queries.jsonl").write_text("".join(json.dumps({"_id": f"q{d}", "text": t}) + "\n"
                                                for d, t in stack.titles.items()))
    (data / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n" +
                                              "".join(f"q{d}\t{d}\t1\n" for d in stack.titles))
    try:
        cal, path = calibrate_index(stack.engine, data, "train", TENANT, beams=20)
        assert path.name == CALIBRATION and set(cal.fusion_weights) == {GENERATIVE, DENSE}
        tried = cal.fit_on["weighted_ndcg_at_10"]
        assert cal.fusion_weights[GENERATIVE] in {float(w) for w in tried}
        assert tried[str(cal.fusion_weights[GENERATIVE])] == max(tried.values())
        yield cal
    finally:
        stack.engine.calibration = None
        Path(stack.config.index_dir, CALIBRATION).unlink(missing_ok=True)


@pytest.fixture
def calibrated(stack: Stack, calibration: Calibration) -> Stack:
    """The stack with the module's calibration, as fitted (a test may change its own copy)."""
    stack.engine.calibration = calibration
    return stack


def _scores(stack: Stack, tenant: str, mode: Mode, depth: int = N_DOCS) -> dict[str, float]:
    """One retriever's own list, ``depth`` deep (all documents by default: an exhaustive beam)."""
    q = SearchQuery(tenant, QUERY, depth, depth, mode)
    return {h.point_id: h.score for h in stack.engine.search([q])[0]}


def test_weighted_fusion_sums_each_retrievers_own_scores(calibrated: Stack) -> None:
    engine = calibrated.engine
    engine.calibration = dataclasses.replace(engine.calibration, fusion_weights={GENERATIVE: 0.1, DENSE: 1.0})
    gen, dense = _scores(calibrated, TENANT, Mode.GENERATIVE), _scores(calibrated, TENANT, Mode.DENSE)
    q = SearchQuery(TENANT, QUERY, 6, 6, Mode.HYBRID, fusion=Fusion.WEIGHTED)
    hits = engine.search([q])[0]
    assert len(hits) == 6 and [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    one_sided = 0
    for h in hits:
        assert h.score == pytest.approx(dense[h.point_id] + 0.1 * gen[h.point_id], abs=1e-4)
        one_sided += len(h.source_names) == 1
    assert one_sided  # some hits came from one list only and were scored by the other retriever
    # it ranks the union of both 6-deep lists (the beam's and Qdrant's) exactly as the formula does
    union = set(_scores(calibrated, TENANT, Mode.GENERATIVE, 6)) | set(_scores(calibrated, TENANT, Mode.DENSE, 6))
    best = sorted(union, key=lambda p: dense[p] + 0.1 * gen[p], reverse=True)[:6]
    assert [h.point_id for h in hits] == best


def test_weighted_fusion_scores_only_the_callers_documents(calibrated: Stack) -> None:
    engine, store = calibrated.engine, calibrated.store
    own = {pid for pid, _ in store.docids_of_tenant(OTHER)}
    real = store.client
    rec = Recorder(real)
    store.client = rec  # type: ignore[assignment]
    try:
        q = SearchQuery(OTHER, QUERY, 3, 3, Mode.HYBRID, fusion=Fusion.WEIGHTED, with_payload=True)
        hits = engine.search([q])[0]
    finally:
        store.client = real
    assert hits and all(h.point_id in own and h.payload["tenant"] == OTHER for h in hits)
    for name, kwargs in rec.calls:
        if name == "query_points":
            assert reads_only(kwargs, OTHER)
        elif name != "collection_exists":  # the running server's health probe may land here: it reads no point
            assert name == "retrieve" and set(kwargs["ids"]) <= own, name
    # the model never scores another tenant's docid: its scorer skips points outside the namespace
    foreign = point_id_for(TENANT, next(iter(calibrated.titles)))
    scorer = engine.scorers(SearchQuery(OTHER, QUERY), engine.embed_queries([QUERY])[0])
    assert scorer[GENERATIVE]([foreign]) == {} and scorer[DENSE]([foreign]) == {}


def test_calibration_report_on_held_out_queries(calibrated: Stack, tmp_path: Path) -> None:
    data = tmp_path / "held-out"
    (data / "qrels").mkdir(parents=True)
    docs = list(calibrated.titles)[:4]
    (data / "queries.jsonl").write_text("".join(json.dumps({"_id": f"h{d}", "text": calibrated.titles[d].lower()})
                                                + "\n" for d in docs))
    (data / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"h{d}\t{d}\t1\n" for d in docs))
    report = calibration_report(calibrated.engine, data, "test", TENANT, tmp_path / "out", "held-out", depth=3)
    assert set(report["retrievers"]) == {"generative", "dense", "hybrid (DBSF)", "hybrid (weighted)", "hybrid (learned)"}
    for r in report["retrievers"].values():
        assert r["hits"] == 12 and 0.0 <= r["ece"] <= 1.0 and sum(b["count"] for b in r["bins"]) == 12
        kept = [r["precision"][str(t)]["kept"] for t in THRESHOLDS]
        assert kept == sorted(kept, reverse=True) and kept[0] <= 12
    assert Path(report["png"]).stat().st_size > 0
    assert json.loads((tmp_path / "out" / "held-out-calibration.json").read_text())["depth"] == 3


def test_weighted_fusion_and_min_probability_under_a_filter(calibrated: Stack) -> None:
    """A filter narrows both retrievers' candidates; every kept point's fused score and calibrated
    probability are what they are without the filter, and min_probability still cuts by them."""
    engine = calibrated.engine
    keep = sorted(calibrated.titles)[::2]
    flt = {"must": [{"key": "doc_id", "match": {"any": keep}}]}
    q = SearchQuery(TENANT, QUERY, len(keep), N_DOCS, Mode.HYBRID, fusion=Fusion.WEIGHTED, with_payload=True,
                    filter=flt)
    hits = engine.search([q])[0]
    assert hits and all(h.payload["doc_id"] in keep for h in hits)
    plain = {h.point_id: h for h in engine.search([dataclasses.replace(q, filter=None, top_k=N_DOCS)])[0]}
    for h in hits:
        assert round(h.score, 5) == round(plain[h.point_id].score, 5)
        assert h.probability is not None and abs(h.probability - (plain[h.point_id].probability or 0)) < 1e-6
    cut = sorted(h.probability or 0.0 for h in hits)[len(hits) // 2]
    kept = engine.search([dataclasses.replace(q, min_probability=cut)])[0]
    assert kept and {h.point_id for h in kept} == {h.point_id for h in hits if (h.probability or 0) >= cut}


def test_a_calibrated_index_fuses_by_dbsf_by_default(calibrated: Stack) -> None:
    """Calibration gives hits probabilities and makes WEIGHTED and LEARNED available; HYBRID's default
    stays DBSF of the three lists, and min_probability cuts its hits by their calibrated probability."""
    q = SearchQuery(TENANT, QUERY, 10, 20, Mode.HYBRID)
    default = calibrated.engine.search([q])[0]
    explicit = calibrated.engine.search([dataclasses.replace(q, fusion=Fusion.DBSF)])[0]
    assert [(h.point_id, h.score) for h in default] == [(h.point_id, h.score) for h in explicit]
    assert any("lexical" in h.source_names for h in default)
    assert all(h.probability is not None and 0.0 <= h.probability <= 1.0 for h in default)
    cut = sorted(h.probability for h in default if h.probability is not None)[len(default) // 2]
    kept = calibrated.engine.search([dataclasses.replace(q, min_probability=cut)])[0]
    assert kept and all((h.probability or 0.0) >= cut for h in kept)
    assert [h.score for h in kept] == sorted((h.score for h in kept), reverse=True)
    passing = [h.point_id for h in default if (h.probability or 0.0) >= cut]  # they rank first among those kept
    assert [h.point_id for h in kept][: len(passing)] == passing

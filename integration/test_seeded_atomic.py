"""Atomic docids whose model rows start at their documents' MiniLM vectors (`--docid-init embeddings`):
one row per document across tenants, rows kept frozen, and `genret index --add` growing the vocabulary
for new documents without touching the old rows. Embedded Qdrant, the default model, real training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from genret.cli import main
from genret.config import Config
from genret.data.beir import load_corpus
from genret.data.index_dir import MODEL_DIR
from genret.data.loader import load_beir
from genret.decoding.model import load_trained
from genret.indexing.indexer import AddOptions, IndexOptions, add_documents, build_index
from genret.indexing.training import TrainConfig
from genret.indexing.training_data import PairOptions
from genret.serving.engine import Engine
from genret.store import QdrantStore
from genret.types import Mode, SearchQuery

from .conftest import INPUT_TOKENS, small_corpus

CPU = torch.device("cpu")
A, B = "acme", "globex"


def _rows(index_dir: str) -> np.ndarray:
    model, _ = load_trained(Path(index_dir) / MODEL_DIR)
    return model.get_output_embeddings().weight.detach().numpy()


def _unit_vectors(store: QdrantStore, tenant: str) -> dict[str, np.ndarray]:
    """docid -> the unit MiniLM vector Qdrant holds for its point."""
    out = {}
    for d in store.scroll_tenant(tenant, with_vectors=True):
        assert d.docid is not None and d.vector is not None
        out[d.docid] = d.vector / np.linalg.norm(d.vector)
    return out


def test_seeded_rows_stay_put_and_added_documents_get_rows_of_their_own(tmp_path: Path) -> None:
    cfg = Config(qdrant_path=str(tmp_path / "q"), collection="seeded", index_dir=str(tmp_path / "idx"), device="cpu")
    store = QdrantStore(cfg)
    train = TrainConfig(epochs=1, batch_size=16, freeze_encoder=True, freeze_docid_embeddings=True,
                        max_input_tokens=INPUT_TOKENS, progress=False)
    try:
        load_beir(store, small_corpus(tmp_path, 12, name="a"), A)
        load_beir(store, small_corpus(tmp_path, 6, 12, "b"), B)
        opts = IndexOptions(scheme="atomic", docid_init="embeddings", spare_docids=2, pairs=PairOptions(max_chunks=0),
                            train=train)
        build_index(store, cfg.index_dir, opts, CPU)
        va, vb = _unit_vectors(store, A), _unit_vectors(store, B)
        assert not set(va) & set(vb) and {int(d) for d in [*va, *vb]} == set(range(18))  # one row per document
        rows = _rows(cfg.index_dir)
        assert rows.shape[0] == 23 and not rows[20:22].any()  # 2 specials, 18 docids, 2 neutral spares, start
        for docid, v in {**va, **vb}.items():  # trained with frozen rows: each is still its document's vector
            np.testing.assert_allclose(rows[2 + int(docid)], v, atol=1e-6)

        load_beir(store, small_corpus(tmp_path, 4, 18, "later"), A)
        m = add_documents(store, cfg.index_dir, AddOptions(replay=1.0, pairs=opts.pairs,
                                                           train=TrainConfig(epochs=1, progress=False)), CPU)
        after = _unit_vectors(store, A)
        assert {k: v for k, v in after.items() if k in va}.keys() == va.keys()
        new = sorted(int(d) for d in set(after) - set(va))
        assert new == [18, 19, 20, 21]  # new tokens after every existing one, never another tenant's
        assert m.codec == {"name": "atomic", "size": 24} and m.model_spec.docid_vocab == 26  # 2 spare again
        assert m.training["additions"][-1]["config"]["freeze_docid_embeddings"]  # carried over from the build
        grown = _rows(cfg.index_dir)
        assert grown.shape[0] == 27 and not grown[24:26].any()
        np.testing.assert_array_equal(grown[:20], rows[:20])  # old rows untouched
        for docid, v in after.items():
            np.testing.assert_allclose(grown[2 + int(docid)], v, atol=1e-6)

        engine = Engine.load(cfg, store)
        hits = engine.search([SearchQuery(t, "pressure distribution on a wing", 10, 20, Mode.GENERATIVE)
                                    for t in (A, B)])
        assert {h.docid for h in hits[0]} <= set(after) and {h.docid for h in hits[1]} <= set(vb)
        assert len(hits[0]) == 10 and len(hits[1]) == 6
    finally:
        store.close()


def test_embedding_init_needs_atomic_docids_and_the_default_model(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    common = ["--qdrant-path", str(tmp_path / "q"), "--collection", "c", "--index-dir", str(tmp_path / "i"),
              "--device", "cpu"]
    assert main(["load", *common, "--data", str(small_corpus(tmp_path, 6, name="a")), "--tenant", A]) == 0
    assert main(["index", *common, "--scheme", "semantic", "--docid-init", "embeddings", "--epochs", "1"]) == 2
    assert "needs atomic docids" in capsys.readouterr().err
    store = QdrantStore(Config(qdrant_path=str(tmp_path / "q"), collection="c", index_dir=str(tmp_path / "i")))
    try:
        with pytest.raises(ValueError, match="needs the default model"):
            build_index(store, str(tmp_path / "i"), IndexOptions(scheme="atomic", docid_init="embeddings",
                                                                 model="tiny"), CPU)
    finally:
        store.close()


def test_upserted_documents_get_their_rows_at_once_and_after_a_restart(tmp_path: Path) -> None:
    from genret.errors import FailedPrecondition
    from genret.types import NewDocument

    cfg = Config(qdrant_path=str(tmp_path / "q"), collection="live", index_dir=str(tmp_path / "idx"), device="cpu")
    store = QdrantStore(cfg)
    try:
        load_beir(store, small_corpus(tmp_path, 16, name="a"), A)
        train = TrainConfig(epochs=2, batch_size=16, freeze_encoder=True, freeze_docid_embeddings=True,
                            max_input_tokens=INPUT_TOKENS, progress=False)
        build_index(store, cfg.index_dir, IndexOptions(scheme="atomic", docid_init="embeddings", spare_docids=3,
                                                       pairs=PairOptions(max_chunks=0), train=train), CPU)
        later = load_corpus(small_corpus(tmp_path, 3, 16, "later"))
        engine = Engine.load(cfg, store)
        assert not engine.backend.head.weight[18:21].any()  # spare rows start neutral
        up = engine.upsert(A, [NewDocument(d.doc_id, d.title, d.text) for d in later[:2]])
        assert [u.docid for u in up] == ["16", "17"]  # spare tokens, in no other document's row

        queries = [SearchQuery(A, f"{d.title}. {d.text}", 10, 20, Mode.GENERATIVE) for d in later[:2]]
        vectors = _unit_vectors(store, A)
        runs = []
        for e in (engine, Engine.load(cfg, store)):  # live, then rebuilt from Qdrant after a restart
            rows = e.backend.head.weight.numpy()
            for u in up:
                np.testing.assert_allclose(rows[2 + int(u.docid)], vectors[u.docid], atol=1e-6)
            runs.append([[(h.docid, round(h.score, 4)) for h in hs] for hs in e.search(queries)])
        assert runs[0] == runs[1]  # the same ranking and scores from the rows rebuilt out of Qdrant
        with pytest.raises(FailedPrecondition, match="index --add"):
            engine.upsert(A, [NewDocument(f"x{i}", f"new {i}", "text") for i in range(2)])  # one spare left
        assert len(list(store.scroll_tenant(A))) == 18  # the refused upsert wrote nothing
    finally:
        store.close()

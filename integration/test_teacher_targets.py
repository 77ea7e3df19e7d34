"""Teacher targets in a real index build: two tenants in embedded Qdrant, each text's soft target drawn
from its own tenant's documents only, and the options that cannot work refused up front."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import genret.indexing.indexer as indexer
from genret.cli import main
from genret.config import Config
from genret.data.loader import load_beir
from genret.indexing.indexer import IndexOptions, build_index
from genret.indexing.teacher import TeacherOptions
from genret.indexing.training import TrainConfig
from genret.indexing.training_data import PairOptions
from genret.serving.engine import Engine
from genret.store import QdrantStore
from genret.types import Mode, SearchQuery

from .conftest import INPUT_TOKENS, small_corpus

CPU = torch.device("cpu")
A, B = "acme", "globex"


def test_soft_targets_stay_inside_each_tenant(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}
    real_train = indexer.train

    def recording_train(*args: Any, **kwargs: Any) -> Any:  # the real training, its inputs kept for the checks
        seen.update(docids=args[4], soft=kwargs["soft"])
        return real_train(*args, **kwargs)

    monkeypatch.setattr(indexer, "train", recording_train)
    cfg = Config(qdrant_path=str(tmp_path / "q"), collection="t", index_dir=str(tmp_path / "idx"), device="cpu")
    store = QdrantStore(cfg)
    try:
        load_beir(store, small_corpus(tmp_path, 10, name="a"), A)
        load_beir(store, small_corpus(tmp_path, 8, 10, "b"), B)
        opts = IndexOptions(scheme="atomic", model="tiny", spare_docids=2,
                            pairs=PairOptions(max_chunks=1, rehearsal=1),
                            teacher=TeacherOptions("fusion", candidates=4),
                            train=TrainConfig(epochs=1, batch_size=16, max_input_tokens=INPUT_TOKENS, progress=False))
        m = build_index(store, cfg.index_dir, opts, CPU)
        assert m.training["options"]["teacher"] == {"kind": "fusion", "candidates": 4, "temperature": 0.5}
        tokens, probs = seen["soft"]
        assert tokens.shape == probs.shape == (len(seen["docids"]), 4)
        torch.testing.assert_close(probs.sum(1), torch.ones(len(probs)))
        docid_token = {d.docid: int(d.docid) + 2 for t in (A, B) for d in store.scroll_tenant(t)}  # 2 specials
        own = {t: {docid_token[d.docid] for d in store.scroll_tenant(t)} for t in (A, B)}  # type: ignore[index]
        for label, row in zip(seen["docids"], tokens.tolist(), strict=True):
            tenant = A if label[0] in own[A] else B
            assert set(row) <= own[tenant] and label[0] in row  # its own tenant's documents, its own among them
        hits = Engine.load(cfg, store).search([SearchQuery(B, "pressure on a wing", 5, 10, Mode.GENERATIVE)])
        assert {h.docid for h in hits[0]} <= {d.docid for d in store.scroll_tenant(B)}
    finally:
        store.close()


def test_teacher_and_query_skip_need_atomic_seeded_docids(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    common = ["--qdrant-path", str(tmp_path / "q"), "--collection", "c", "--index-dir", str(tmp_path / "i"),
              "--device", "cpu", "--model", "tiny", "--epochs", "1"]
    assert main(["load", *common[:8], "--data", str(small_corpus(tmp_path, 6, name="a")), "--tenant", A]) == 0
    assert main(["index", *common, "--scheme", "semantic", "--teacher", "bm25"]) == 2
    assert "teacher targets (bm25) need atomic docids" in capsys.readouterr().err
    assert main(["index", *common, "--scheme", "atomic", "--query-skip", "20"]) == 2
    assert "query skip needs docid rows" in capsys.readouterr().err
    assert main(["index", *common, "--scheme", "atomic", "--round-trip", "-1"]) == 2
    assert "cannot be negative" in capsys.readouterr().err
    assert not (tmp_path / "i").exists()  # refused before anything was written

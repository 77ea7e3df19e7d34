"""Blue/green over one collection: a second index writes its docids under its own payload key, so the
first index keeps serving unchanged beside it, and neither serves the other's docids."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from genret.config import Config
from genret.data.loader import load_beir
from genret.indexing.indexer import IndexOptions, build_index
from genret.indexing.training import TrainConfig
from genret.serving.engine import Engine
from genret.store import DOCID_KEY, QdrantStore

from .conftest import small_corpus

GREEN_KEY = "genret_docid_v2"


@pytest.mark.e2e
def test_a_second_index_under_its_own_docid_key_leaves_the_first_whole(tmp_path: Path) -> None:
    blue = Config(qdrant_path=str(tmp_path / "q"), collection="bg", device="cpu", index_dir=str(tmp_path / "blue"))
    green = dataclasses.replace(blue, index_dir=str(tmp_path / "green"), docid_key=GREEN_KEY)
    opts = IndexOptions(scheme="atomic", model="tiny", spare_docids=4, train=TrainConfig(epochs=1, progress=False))
    store = QdrantStore(blue)
    try:
        load_beir(store, small_corpus(tmp_path, 10), "t", with_vectors=False)
        build_index(store, blue.index_dir, opts, torch.device("cpu"))
        before = {p.id: (p.payload or {})[DOCID_KEY] for p in store.client.scroll("bg", limit=100)[0]}
        green_store = QdrantStore(green, client=store.client)
        build_index(green_store, green.index_dir, dataclasses.replace(opts, spare_docids=9), torch.device("cpu"))

        payloads = {p.id: p.payload or {} for p in store.client.scroll("bg", limit=100)[0]}
        assert {pid: p[DOCID_KEY] for pid, p in payloads.items()} == before  # blue's docids untouched
        assert all(GREEN_KEY in p for p in payloads.values())
        assert Engine.load(blue, store).namespaces.counts == {"t": 10}
        assert Engine.load(green, green_store).namespaces.counts == {"t": 10}
        with pytest.raises(ValueError, match=f"--docid-key {GREEN_KEY}"):
            Engine.load(dataclasses.replace(green, docid_key=DOCID_KEY), store)
    finally:
        store.close()

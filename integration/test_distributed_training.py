"""`genret index` under torchrun: two CPU processes (gloo, DistributedDataParallel) build an index that
decodes its training queries like a one-process build of the same seed; a build stopped after some
epochs resumes from its saved training state."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from genret.config import Config
from genret.data.beir import load_corpus
from genret.data.loader import load_beir
from genret.indexing.indexer import IndexOptions, TrainingQueries, build_index
from genret.indexing.training import TrainConfig
from genret.indexing.training_data import PairOptions
from genret.serving.engine import Engine
from genret.store import QdrantStore, point_id_for
from genret.types import SearchQuery

from .conftest import INPUT_TOKENS, small_corpus

N = 16
TENANT = "acme"
# Tolerance: the two builds see the same pairs in differently composed batches, so they need not agree
# everywhere; both must have learned their training queries and agree on nearly all of them.
MIN_AGREEMENT = 0.8
MIN_ACCURACY = 0.8
INDEX_ARGS = ("--model", "tiny", "--scheme", "semantic", "--branching", "4", "--epochs", "25", "--batch-size", "8",
              "--max-input-tokens", str(INPUT_TOKENS),
              "--decoder-lr", "5e-3", "--encoder-lr", "5e-3", "--max-chunks", "1", "--rehearsal", "0",
              "--generated-queries", "0", "--seed", "3")


def _with_queries(tmp: Path) -> tuple[Path, dict[str, str]]:
    """The corpus as a BEIR folder whose training queries are the titles, each judged for its document."""
    folder = small_corpus(tmp, N)
    titles = {d.doc_id: d.title for d in load_corpus(folder)}
    (folder / "queries.jsonl").write_text("".join(json.dumps({"_id": f"q{d}", "text": t}) + "\n"
                                                  for d, t in titles.items()))
    (folder / "qrels").mkdir()
    (folder / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n" +
                                                "".join(f"q{d}\t{d}\t1\n" for d in titles))
    return folder, titles


def _env(tmp: Path, name: str) -> dict[str, str]:
    return {**os.environ, "GENRET_QDRANT_PATH": str(tmp / name / "q"), "GENRET_INDEX_DIR": str(tmp / name / "idx"),
            "GENRET_COLLECTION": "ddp", "GENRET_DEVICE": "cpu", "OMP_NUM_THREADS": "1"}


def _top1(env: dict[str, str], titles: dict[str, str]) -> dict[str, str]:
    cfg = Config(qdrant_path=env["GENRET_QDRANT_PATH"], index_dir=env["GENRET_INDEX_DIR"], collection="ddp",
                 device="cpu")
    store = QdrantStore(cfg)
    try:
        engine = Engine.load(cfg, store)
        hits = engine.search([SearchQuery(TENANT, t, top_k=1, beams=8) for t in titles.values()])
        doc_of = {point_id_for(TENANT, d): d for d in titles}
        return {d: doc_of[h[0].point_id] if h else "" for d, h in zip(titles, hits, strict=True)}
    finally:
        store.close()


def _load(env: dict[str, str], corpus: Path) -> None:
    store = QdrantStore(Config(qdrant_path=env["GENRET_QDRANT_PATH"], collection="ddp"))
    try:
        load_beir(store, corpus, TENANT, with_vectors=False)
    finally:
        store.close()


def _one_process_build(env: dict[str, str], corpus: Path, titles: dict[str, str]) -> None:
    """The same build as INDEX_ARGS, in this process."""
    cfg = Config(qdrant_path=env["GENRET_QDRANT_PATH"], index_dir=env["GENRET_INDEX_DIR"], collection="ddp",
                 device="cpu")
    _load(env, corpus)
    store = QdrantStore(cfg)
    try:
        opts = IndexOptions(scheme="semantic", branching=4, model="tiny", pairs=PairOptions(max_chunks=1),
                            train=TrainConfig(epochs=25, batch_size=8, decoder_lr=5e-3, encoder_lr=5e-3, seed=3,
                                              max_input_tokens=INPUT_TOKENS, progress=False))
        build_index(store, cfg.index_dir, opts, torch.device("cpu"),
                    TrainingQueries({f"q{d}": t for d, t in titles.items()}, {f"q{d}": {d: 1} for d in titles}))
    finally:
        store.close()


@pytest.mark.e2e
def test_two_processes_build_what_one_builds(tmp_path: Path) -> None:
    corpus, titles = _with_queries(tmp_path)
    one, two = _env(tmp_path, "one"), _env(tmp_path, "two")
    _one_process_build(one, corpus, titles)
    _load(two, corpus)
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                        "-m", "genret.cli", "index", *INDEX_ARGS, "--queries-from", str(corpus)],
                       env=two, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("index written") == 1  # rank 0 alone writes and reports
    manifest = json.loads((tmp_path / "two" / "idx" / "manifest.json").read_text())
    assert manifest["training"]["processes"] == 2
    assert not (tmp_path / "two" / "idx.train-state.pt").exists()  # removed once the index is published

    a, b = _top1(one, titles), _top1(two, titles)
    accuracy = lambda got: sum(got[d] == d for d in titles) / N  # noqa: E731
    assert accuracy(a) >= MIN_ACCURACY and accuracy(b) >= MIN_ACCURACY, (accuracy(a), accuracy(b))
    agreement = sum(a[d] == b[d] for d in titles) / N
    print(f"accuracy one process {accuracy(a):.2f}, two {accuracy(b):.2f}; agreement {agreement:.2f}")
    assert agreement >= MIN_AGREEMENT, (a, b)

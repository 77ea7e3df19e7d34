"""A real stack for end-to-end tests: embedded Qdrant, a tiny trained model, a gRPC server on 127.0.0.1:0."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator
from pathlib import Path

from genret.config import Config, force_offline

force_offline()
if not os.path.exists("/dev/nvidia0"):
    os.environ.setdefault("TRITON_INTERPRET", "1")

import grpc  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from genret.api.server import ServerThread  # noqa: E402
from genret.data.beir import demo_corpus_path, load_corpus  # noqa: E402
from genret.data.loader import load_beir  # noqa: E402
from genret.indexing.indexer import IndexOptions, TrainingQueries, build_index  # noqa: E402
from genret.indexing.training import TrainConfig  # noqa: E402
from genret.indexing.training_data import PairOptions  # noqa: E402
from genret.serving.engine import Engine  # noqa: E402
from genret.store import QdrantStore  # noqa: E402
from genret.v1 import genret_pb2_grpc as pb_grpc  # noqa: E402

N_DOCS = 24
TENANT = "acme"
OTHER = "globex"
# Encoder input tokens per training text in the test builds: a title and a document's first words are enough
# for a small model to learn its documents, at a quarter of the work of the default 128.
INPUT_TOKENS = 32


@dataclasses.dataclass
class Stack:
    config: Config
    store: QdrantStore
    engine: Engine
    server: ServerThread
    stub: pb_grpc.GenRetStub
    channel: grpc.Channel
    titles: dict[str, str]  # doc_id -> title (each document's own training query)


def small_corpus(tmp: Path, n: int, start: int = 0, name: str = "corpus") -> Path:
    """A BEIR folder ``tmp/name`` holding demo documents ``start`` to ``start + n``."""
    folder = tmp / name
    folder.mkdir()
    lines = (demo_corpus_path() / "corpus.jsonl").read_text().splitlines()[start : start + n]
    (folder / "corpus.jsonl").write_text("\n".join(lines) + "\n")
    return folder


def trained_engine(store: QdrantStore, cfg: Config, titles: dict[str, str], scheme: str, epochs: int,
                   branching: int = 4, lr: float = 3e-3, input_tokens: int = INPUT_TOKENS) -> Engine:
    """A tiny model trained on the documents and on each title as a query for its document; its engine."""
    tq = TrainingQueries({f"q{d}": t for d, t in titles.items()}, {f"q{d}": {d: 1} for d in titles})
    opts = IndexOptions(scheme=scheme, branching=branching, model="tiny", pairs=PairOptions(max_chunks=1),
                        train=TrainConfig(epochs=epochs, batch_size=16, decoder_lr=lr, encoder_lr=lr,
                                          progress=False, seed=0, max_input_tokens=input_tokens))
    torch.manual_seed(0)
    build_index(store, cfg.index_dir, opts, torch.device("cpu"), tq)
    return Engine.load(cfg, store)


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("stack")
    corpus = small_corpus(tmp, N_DOCS)
    cfg = Config(qdrant_path=str(tmp / "qdrant"), collection="e2e", index_dir=str(tmp / "index"), port=0,
                 device="cpu")
    store = QdrantStore(cfg)
    load_beir(store, corpus, TENANT, with_vectors=True)
    load_beir(store, corpus, OTHER, with_vectors=True, limit=6)  # same texts, another namespace
    docs = load_corpus(corpus)
    titles = {d.doc_id: d.title for d in docs}
    engine = trained_engine(store, cfg, titles, "semantic", epochs=40, lr=5e-3)
    server = ServerThread(cfg, engine).__enter__()
    channel = grpc.insecure_channel(server.target)
    try:
        yield Stack(cfg, store, engine, server, pb_grpc.GenRetStub(channel), channel, titles)
    finally:
        channel.close()
        server.stop()
        store.close()

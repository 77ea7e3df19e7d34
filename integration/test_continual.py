"""Indexing with generated queries and rehearsal, and continual indexing (`genret index --add`), on
embedded Qdrant with tiny real models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from genret.cli import main
from genret.config import Config
from genret.data.beir import load_corpus
from genret.data.index_dir import DOCIDS, MEMORY, query_cache_path, read_manifest
from genret.indexing.indexer import AddOptions, IndexOptions, add_documents, build_index
from genret.indexing.pairs import passage
from genret.indexing.querygen import QueryCache, SamplingSettings, generator_id, save_tiny_generator
from genret.indexing.training import TrainConfig
from genret.indexing.training_data import PairOptions
from genret.serving.engine import Engine
from genret.store import QdrantStore
from genret.types import Mode, SearchQuery

from .conftest import INPUT_TOKENS, small_corpus

TENANT = "acme"
FIRST, LATER = 16, 8


def _payload_docids(store: QdrantStore) -> dict[str, str]:
    return {d.doc_id: d.docid for d in store.scroll_tenant(TENANT) if d.docid}  # type: ignore[misc]


def _train(epochs: float = 3) -> TrainConfig:
    return TrainConfig(epochs=epochs, batch_size=16, decoder_lr=3e-3, encoder_lr=3e-3, max_input_tokens=INPUT_TOKENS,
                       progress=False)


@pytest.fixture()
def two_parts(tmp_path: Path) -> tuple[Config, QdrantStore, Path, Path]:
    cfg = Config(qdrant_path=str(tmp_path / "q"), collection="cont", index_dir=str(tmp_path / "idx"), device="cpu")
    return (cfg, QdrantStore(cfg), small_corpus(tmp_path, FIRST, name="first"),
            small_corpus(tmp_path, LATER, FIRST, "later"))


@pytest.mark.parametrize("scheme", ["semantic", "keyword", "atomic"])
def test_add_trains_new_documents_and_never_changes_existing_docids(two_parts, scheme: str) -> None:  # type: ignore[no-untyped-def]
    from genret.data.loader import load_beir

    cfg, store, first, later = two_parts
    try:
        load_beir(store, first, TENANT)
        opts = IndexOptions(scheme=scheme, branching=4, model="tiny", pairs=PairOptions(max_chunks=1, rehearsal=1),
                            train=_train())
        build_index(store, cfg.index_dir, opts, torch.device("cpu"))
        before = _payload_docids(store)
        assert len(before) == FIRST

        load_beir(store, later, TENANT)
        m = add_documents(store, cfg.index_dir, AddOptions(replay=1.0, pairs=opts.pairs, train=_train()),
                          torch.device("cpu"))
        after = _payload_docids(store)
        assert {k: after[k] for k in before} == before  # old docids untouched
        assert len(after) == FIRST + LATER and len(set(after.values())) == FIRST + LATER
        records = [json.loads(x) for x in (Path(cfg.index_dir) / DOCIDS).read_text().splitlines()]
        assert {r["doc_id"]: r["docid"] for r in records} == after
        memory = [json.loads(x) for x in (Path(cfg.index_dir) / MEMORY).read_text().splitlines()]
        assert {m["doc_id"] for m in memory} == set(after) and all(m["texts"] for m in memory)
        added = m.training["additions"][-1]
        assert added["added"] == {TENANT: LATER} and added["replayed"] == sum(added["pairs"].values())
        assert m.tenants == {TENANT: FIRST + LATER}

        engine = Engine.load(cfg, store)  # the index serves every document, old and new
        hits = engine.search([SearchQuery(TENANT, d.title, 10, 10, Mode.GENERATIVE)
                                    for d in load_corpus(later)])
        assert hits and all(h.docid in set(after.values()) for hs in hits for h in hs)
        with pytest.raises(ValueError, match="already in the index"):
            add_documents(store, cfg.index_dir, AddOptions(train=_train(1)), torch.device("cpu"))
    finally:
        store.close()


def test_index_generates_queries_once_and_reuses_the_cache(two_parts, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from genret.data.loader import load_beir

    cfg, store, first, _ = two_parts
    gen = save_tiny_generator(tmp_path / "gen")
    try:
        load_beir(store, first, TENANT)
        opts = IndexOptions(scheme="semantic", branching=4, model="tiny", train=_train(1),
                            pairs=PairOptions(max_chunks=0, generated_queries=2, query_samples=3,
                                              query_generator=str(gen)))
        m1 = build_index(store, cfg.index_dir, opts, torch.device("cpu"))
        assert m1.training["queries_generated_for"] == FIRST and m1.training["pairs"]["generated"] > 0
        assert query_cache_path(cfg.index_dir).is_file()
        m2 = build_index(store, cfg.index_dir, opts, torch.device("cpu"))
        assert m2.training["queries_generated_for"] == 0 and m2.training["pairs"] == m1.training["pairs"]
    finally:
        store.close()


def test_a_time_budget_caps_query_generation_and_the_rest_goes_to_training(two_parts, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from dataclasses import replace

    from genret.data.loader import load_beir

    cfg, store, first, _ = two_parts
    gen = save_tiny_generator(tmp_path / "gen")
    try:
        load_beir(store, first, TENANT)
        pairs = PairOptions(max_chunks=0, generated_queries=2, query_samples=2, query_generator=str(gen), query_batch=4)
        # a budget the first batch of 4 documents uses up: the other 12 get no generated queries
        tight = IndexOptions(scheme="semantic", branching=4, model="tiny", pairs=pairs,
                             train=replace(_train(1), max_minutes=1e-6))
        m1 = build_index(store, cfg.index_dir, tight, torch.device("cpu"))
        t1 = m1.training
        assert t1["queries_generated_for"] == 4 and t1["without_generated_queries"] == FIRST - 4
        assert t1["query_generation_s"] >= 0 and t1["pairs"]["generated"] <= 8
        assert t1["config"]["max_minutes"] == 1e-6  # the budget as given; training got what generation left
        assert len(QueryCache(query_cache_path(cfg.index_dir))) == 4
        # the same build without a budget generates the 12 left, and only them
        m2 = build_index(store, cfg.index_dir, replace(tight, train=_train(1)), torch.device("cpu"))
        assert m2.training["queries_generated_for"] == FIRST - 4 and m2.training["without_generated_queries"] == 0
    finally:
        store.close()


class _Ticks:
    """A clock that moves one second each time it is read: every generated batch takes 1 s, and a
    tenant's first batch 2 s (its generator's load)."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        self.now += 1.0
        return self.now


def test_a_time_budget_for_generation_is_shared_between_tenants_by_their_waiting_documents(  # type: ignore[no-untyped-def]
        two_parts, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dataclasses import replace

    from genret.data.loader import load_beir
    from genret.indexing import querygen

    cfg, store, _, _ = two_parts
    gen = save_tiny_generator(tmp_path / "gen")
    monkeypatch.setattr(querygen, "time", _Ticks())
    reads: list[Path] = []
    read_text = Path.read_text
    monkeypatch.setattr(Path, "read_text", lambda self, *a, **k: reads.append(self) or read_text(self, *a, **k))
    try:
        load_beir(store, small_corpus(tmp_path, 8, 0, "a"), "a-corp")
        load_beir(store, small_corpus(tmp_path, 8, 8, "b"), "b-corp")
        pairs = PairOptions(max_chunks=0, generated_queries=2, query_samples=2, query_generator=str(gen), query_batch=2)
        # generation may take 8 s of the budget; a-corp's share is half. Its generator's load and two batches of
        # 2 documents take 3 s (a third would not end within 4 s); b-corp gets the 5 s left, three batches.
        # Shared first come, first served, a-corp would take 6 s for all its 8 documents and b-corp one batch
        budget = IndexOptions(scheme="semantic", branching=4, model="tiny", pairs=pairs,
                              train=replace(_train(1), max_minutes=16 / 60))
        m = build_index(store, cfg.index_dir, budget, torch.device("cpu"))
        assert m.training["queries_generated_by_tenant"] == {"a-corp": 4, "b-corp": 6}
        assert m.training["query_generation_s"] == 7.0
        assert query_cache_path(cfg.index_dir) not in reads  # one cache for the build: what it wrote is not read back
        name = generator_id(str(gen), SamplingSettings(max_input_tokens=pairs.query_input_tokens))
        cache = QueryCache(query_cache_path(cfg.index_dir))
        for corpus, generated in (("a", 4), ("b", 6)):
            texts = [passage(d.title, d.text) for d in load_corpus(tmp_path / corpus)]
            assert sum(1 for t in texts if cache.get(QueryCache.key(name, t))) == generated
    finally:
        store.close()


def test_cli_index_add(two_parts, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cfg, store, first, later = two_parts
    store.close()
    common = ["--qdrant-path", cfg.qdrant_path, "--collection", cfg.collection, "--index-dir", cfg.index_dir,
              "--device", "cpu"]
    assert main(["load", *common, "--data", str(first), "--tenant", TENANT]) == 0
    pairs = ["--max-chunks", "0", "--rehearsal", "0", "--generated-queries", "0"]
    assert main(["index", *common, "--model", "tiny", "--scheme", "rq", "--branching", "4", "--epochs", "1",
                 *pairs]) == 0
    assert main(["load", *common, "--data", str(later), "--tenant", TENANT]) == 0
    assert main(["index", *common, "--add", "--epochs", "1", "--replay", "0.5", "--sam-rho", "0.05", *pairs]) == 0
    added = read_manifest(cfg.index_dir).training["additions"][0]
    assert added["added"] == {TENANT: LATER} and added["config"]["sam_rho"] == 0.05
    assert added["replayed"] == round(0.5 * sum(added["pairs"].values()))


def test_add_keeps_only_generated_queries_that_lead_back_among_all_the_tenants_documents(two_parts) -> None:  # type: ignore[no-untyped-def]
    """Each new document has two cached candidates: its own opening words, and an old document's. The
    round trip checks them against the tenant's old and new documents together, so only the first passes."""
    from genret.data.loader import load_beir

    cfg, store, first, later = two_parts
    cache = Path(cfg.index_dir).parent / "queries.jsonl"
    pairs = PairOptions(max_chunks=0, generated_queries=2, query_samples=2, round_trip=1)
    name = generator_id(pairs.query_generator, SamplingSettings(max_input_tokens=pairs.query_input_tokens))
    old, new = load_corpus(first), load_corpus(later)
    opening = lambda d: " ".join(passage(d.title, d.text).split()[:24])  # noqa: E731
    QueryCache(cache).put_many([(QueryCache.key(name, passage(d.title, d.text)), [opening(d), opening(old[i])])
                                for i, d in enumerate(new)])
    try:
        load_beir(store, first, TENANT)
        build_index(store, cfg.index_dir, IndexOptions(scheme="atomic", model="tiny", train=_train(1),
                                                       pairs=PairOptions(max_chunks=1)), torch.device("cpu"))
        load_beir(store, later, TENANT)
        m = add_documents(store, cfg.index_dir, AddOptions(pairs=pairs, query_cache=str(cache), train=_train(1)),
                          torch.device("cpu"))
        assert m.training["additions"][-1]["pairs"]["generated"] == LATER
    finally:
        store.close()

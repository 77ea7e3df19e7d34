from __future__ import annotations

import numpy as np
import pytest

from genret.docids import (
    EOS,
    FIRST_CODE,
    PAD,
    AtomicCodec,
    NaiveCodec,
    SemanticCodec,
    assign_docids,
    build_codec,
    codec_from_json,
)


def embeddings(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(5, 16))
    return (centers[rng.integers(0, 5, n)] + 0.1 * rng.normal(size=(n, 16))).astype(np.float32)


@pytest.mark.parametrize("scheme", ["semantic", "atomic", "naive"])
def test_docids_unique_deterministic_and_round_trip(scheme: str) -> None:
    keys = [f"doc{i}" for i in range(137)]
    emb = embeddings(len(keys))
    a = assign_docids(scheme, keys, emb, branching=6, seed=3)
    b = assign_docids(scheme, keys, emb, branching=6, seed=3)
    assert a == b and len(set(a)) == len(a)
    codec = codec_from_json(build_codec(scheme, {"t": a}, 6).to_json())
    toks = codec.encode_many(a)
    assert toks.shape == (len(a), codec.max_length + 1)
    for docid, row in zip(a, toks, strict=True):
        body = row[: int(np.argmax(row == EOS))]
        assert codec.decode(body.tolist()) == docid
        assert (body >= FIRST_CODE).all() and (body < codec.vocab_size).all()
        assert (row[len(body) + 1 :] == PAD).all()


def test_semantic_docids_group_similar_documents() -> None:
    rng = np.random.default_rng(1)
    a = rng.normal(size=(1, 16)) * 5
    b = -a
    emb = np.concatenate([a + 0.01 * rng.normal(size=(30, 16)), b + 0.01 * rng.normal(size=(30, 16))])
    ids = assign_docids("semantic", [str(i) for i in range(60)], emb.astype(np.float32), branching=2, seed=0)
    first = {d.split("-")[0] for d in ids[:30]}
    second = {d.split("-")[0] for d in ids[30:]}
    assert len(first) == 1 and len(second) == 1 and first != second


def test_semantic_tokens_are_level_specific() -> None:
    codec = SemanticCodec(branching=10, depth=3)
    assert codec.vocab_size == 32
    assert codec.encode("3-0-9") == [FIRST_CODE + 3, FIRST_CODE + 10, FIRST_CODE + 29]
    with pytest.raises(ValueError):
        codec.encode("3-0-9-1")
    with pytest.raises(ValueError):
        codec.encode("10")


def test_semantic_identical_embeddings_still_unique() -> None:
    emb = np.ones((50, 4), dtype=np.float32)
    ids = assign_docids("semantic", [str(i) for i in range(50)], emb, branching=4, seed=0)
    assert len(set(ids)) == 50


def test_atomic_and_naive_codecs() -> None:
    assert AtomicCodec(5).encode("4") == [FIRST_CODE + 4]
    with pytest.raises(ValueError):
        AtomicCodec(5).encode("5")
    naive = NaiveCodec("0123456789", 4)
    assert naive.decode(naive.encode("1400")) == "1400"
    with pytest.raises(ValueError):
        naive.encode("14000")
    with pytest.raises(ValueError):
        naive.encode("a")
    with pytest.raises(ValueError):
        assign_docids("naive", ["a", "a"], None)


def test_unknown_scheme_lists_valid_ones() -> None:
    with pytest.raises(ValueError, match="semantic, atomic, naive"):
        assign_docids("random", ["a"], None)
    with pytest.raises(ValueError, match="semantic"):
        codec_from_json({"name": "random"})

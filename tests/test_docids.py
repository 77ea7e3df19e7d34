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
    residual_quantization,
)
from genret.docids.keywords import keyword_docids, place, vocabulary


def embeddings(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(5, 16))
    return (centers[rng.integers(0, 5, n)] + 0.1 * rng.normal(size=(n, 16))).astype(np.float32)


def texts(n: int) -> list[tuple[str, str]]:
    topics = ["wing lift slipstream", "boundary layer shear flow", "heat transfer cone hypersonic",
              "panel flutter supersonic", "shock wave interaction"]
    return [(f"{topics[i % 5]} study {i % 7}", f"text about {topics[i % 5]} number {i}") for i in range(n)]


@pytest.mark.parametrize("scheme", ["semantic", "rq", "keyword", "atomic", "naive"])
def test_docids_unique_deterministic_and_round_trip(scheme: str) -> None:
    keys = [f"doc{i}" for i in range(137)]
    emb = embeddings(len(keys))
    a = assign_docids(scheme, keys, emb, branching=6, seed=3, texts=texts(len(keys)))
    b = assign_docids(scheme, keys, emb, branching=6, seed=3, texts=texts(len(keys)))
    assert a == b and len(set(a)) == len(a)
    words = vocabulary(texts(len(keys))) if scheme == "keyword" else ()
    codec = codec_from_json(build_codec(scheme, {"t": a}, 6, words=words).to_json())
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
    with pytest.raises(ValueError, match="not a number"):
        AtomicCodec(5).encode("1-0-4")
    naive = NaiveCodec("0123456789", 4)
    assert naive.decode(naive.encode("1400")) == "1400"
    with pytest.raises(ValueError):
        naive.encode("14000")
    with pytest.raises(ValueError):
        naive.encode("a")
    with pytest.raises(ValueError):
        assign_docids("naive", ["a", "a"], None)


def test_unknown_scheme_lists_valid_ones() -> None:
    with pytest.raises(ValueError, match="semantic, rq, keyword, atomic, naive"):
        assign_docids("random", ["a"], None)
    with pytest.raises(ValueError, match="semantic"):
        codec_from_json({"name": "random"})


def test_rq_codes_quantise_residuals_and_end_unique() -> None:
    emb = embeddings(300, seed=2)
    paths = residual_quantization(emb, codebook=4, seed=0)
    levels = len(paths[0]) - 1
    assert levels == 5 and all(len(p) == levels + 1 for p in paths)  # ceil(log4 300) = 5, plus the last level
    assert len({tuple(p) for p in paths}) == len(paths)
    assert all(0 <= c < 4 for p in paths for c in p[:-1])
    twins = residual_quantization(np.concatenate([emb[:1], emb[:1], emb[1:50]]), codebook=4, seed=0)
    assert twins[0][:-1] == twins[1][:-1] and {twins[0][-1], twins[1][-1]} == {0, 1}  # same codes, then numbered


def test_keyword_docids_are_readable_general_first_and_unique() -> None:
    docs = [("Boundary layer in shear flow", "..."), ("Boundary layer on a cone", "..."),
            ("Boundary layer in shear flow", "again the same title"), ("", "heat transfer to a cone in flow")]
    ids = keyword_docids(docs)
    assert ids[0] == "boundary-layer-shear" or set(ids[0].split("-")) == {"boundary", "layer", "shear"}
    assert ids[2] == f"{ids[0]}-#2"  # same words: told apart by a suffix
    assert ids[1].startswith("boundary-layer") or ids[1].startswith("layer-boundary")
    assert "cone" in ids[1].split("-") and "heat" in ids[3]  # no title: words from the text
    vocab = vocabulary(docs)
    assert vocab[:3] == ["boundary", "flow", "layer"] and vocab.index("cone") < vocab.index("heat")  # by frequency
    codec = build_codec("keyword", {"t": ids}, 10, words=vocab)
    assert [codec.decode(codec.encode(d)) for d in ids] == ids


def test_keyword_place_uses_known_words_and_never_collides() -> None:
    docs = [("Boundary layer in shear flow", ""), ("Boundary layer on a cone", ""), ("Heat transfer", "")]
    vocab = vocabulary(docs)
    taken = set(keyword_docids(docs))
    new = place(vocab, "Shear flow on a cone with unknownword", "", taken)
    assert new is not None and set(new.split("-")) <= set(vocab) and new not in taken
    again = place(vocab, "Shear flow on a cone with unknownword", "", taken | {new})
    assert again == f"{new}-#2"
    assert place(vocab, "zzz qqq", "nothing known here", taken) is None

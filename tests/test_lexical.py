"""BM25 built in worker processes is the index the calling thread would build."""

from __future__ import annotations

import pickle

import numpy as np

from genret.data.beir import demo_corpus_path, load_corpus
from genret.data.lexical import Bm25, bm25_or_none
from genret.serving.lexical import _BUILDERS

QUERIES = ["supersonic flow over wings", "heat transfer in laminar boundary layers"]


def test_an_index_built_in_a_worker_process_scores_as_one_built_here() -> None:
    texts = [f"{d.title} {d.text}" for d in load_corpus(demo_corpus_path())[:300]]
    here, there = Bm25(texts), _BUILDERS.build(texts, processes=2)
    assert there is not None
    np.testing.assert_array_equal(here.scores(QUERIES), there.scores(QUERIES))
    for a, b in zip(here.top(QUERIES, 10), there.top(QUERIES, 10), strict=True):
        np.testing.assert_array_equal(a, b)
    assert pickle.loads(pickle.dumps(here)).scores(QUERIES).tolist() == here.scores(QUERIES).tolist()


def test_texts_with_no_word_to_index_give_no_index_in_either_place() -> None:
    for texts in ([], ["the of and", "a an"]):
        assert bm25_or_none(texts) is None and _BUILDERS.build(texts, processes=2) is None

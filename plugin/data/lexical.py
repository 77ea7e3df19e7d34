"""BM25 over a fixed set of texts: the lexical retriever of evaluation and of the training teacher.

Okapi BM25 with k1 0.9 and b 0.4 over lowercase word tokens without English stop words (bm25s), the
settings of the BEIR reference figures.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

K1, B = 0.9, 0.4


def _bm25s() -> Any:
    import bm25s

    if not logging.getLogger().isEnabledFor(logging.DEBUG):
        logging.getLogger("bm25s").setLevel(logging.WARNING)  # bm25s turns its logger to DEBUG when imported
    return bm25s


class Bm25:
    """Scores queries against ``texts`` (row ``i`` of every result is ``texts[i]``)."""

    def __init__(self, texts: Sequence[str]) -> None:
        bm25s = _bm25s()
        self.size = len(texts)
        self._index = bm25s.BM25(k1=K1, b=B)
        self._index.index(bm25s.tokenize(list(texts), stopwords="en", show_progress=False), show_progress=False)

    def top(self, queries: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """(len(queries), k) text rows and their scores, best first."""
        bm25s = _bm25s()
        tokens = bm25s.tokenize(list(queries), stopwords="en", show_progress=False)
        rows, scores = self._index.retrieve(tokens, k=min(k, self.size), show_progress=False)
        return np.asarray(rows, dtype=np.int64), np.asarray(scores, dtype=np.float32)

    def scores(self, queries: Sequence[str]) -> np.ndarray:
        """(len(queries), len(texts)) scores of every text for every query."""
        out = np.zeros((len(queries), self.size), dtype=np.float32)
        for i, w in enumerate(words(queries)):
            if w:
                out[i] = self._index.get_scores(w)
        return out


def words(texts: Sequence[str]) -> list[list[str]]:
    """Each text's indexed words, in order and repeated as often as they occur."""
    return _bm25s().tokenize(list(texts), stopwords="en", return_ids=False, show_progress=False)

"""BM25 over a fixed set of texts: the lexical retriever of evaluation and of the training teacher.

Okapi BM25 with k1 0.9 and b 0.4 over lowercase word tokens without English stop words (bm25s), the
settings of the BEIR reference figures.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np

K1, B = 0.9, 0.4


class Bm25:
    """Scores queries against ``texts`` (row ``i`` of every result is ``texts[i]``). It pickles, so another
    process can build it."""

    def __init__(self, texts: Sequence[str]) -> None:
        import bm25s

        if not logging.getLogger().isEnabledFor(logging.DEBUG):
            logging.getLogger("bm25s").setLevel(logging.WARNING)  # bm25s turns its logger to DEBUG when imported
        self.size = len(texts)
        self._index = bm25s.BM25(k1=K1, b=B)
        self._index.index(bm25s.tokenize(list(texts), stopwords="en", show_progress=False), show_progress=False)

    def top(self, queries: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """(len(queries), k) text rows and their scores, best first."""
        import bm25s

        tokens = bm25s.tokenize(list(queries), stopwords="en", show_progress=False)
        rows, scores = self._index.retrieve(tokens, k=min(k, self.size), show_progress=False)
        return np.asarray(rows, dtype=np.int64), np.asarray(scores, dtype=np.float32)

    def scores(self, queries: Sequence[str]) -> np.ndarray:
        """(len(queries), len(texts)) scores of every text for every query."""
        out = np.zeros((len(queries), self.size), dtype=np.float32)
        import bm25s

        words = bm25s.tokenize(list(queries), stopwords="en", return_ids=False, show_progress=False)
        for i, w in enumerate(words):
            if w:
                out[i] = self._index.get_scores(w)
        return out


def bm25_or_none(texts: Sequence[str]) -> Bm25 | None:
    """BM25 over ``texts``; None when they hold no word to index (none, or stop words only)."""
    if not texts:
        return None
    try:
        return Bm25(texts)
    except ValueError:  # bm25s refuses an empty vocabulary
        return None

"""A teacher ranking for training texts (generative pseudo-labelling): which of a namespace's documents
BM25, dense retrieval or their fusion put first for each text.

It serves twice. As soft targets: each training text gets the teacher's top ``candidates`` documents
(its own document always among them) and a softmax of their teacher scores, which the model's docid
distribution is trained towards beside the one-label cross-entropy. As a round-trip check: a generated
query is kept only if the teacher ranks its source document in the top k (``PairOptions.round_trip``).

The fused score of a document for a text is the mean of its standardised BM25 and dense scores, each
standardised over all the namespace's documents for that text, so both retrievers count alike whatever
their scales. A teacher sees one namespace's documents only: targets never name another tenant's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from genret.data.lexical import Bm25

TEACHERS = ("none", "bm25", "dense", "fusion")
_CHUNK = 512  # texts scored at once: bounds the (texts, documents) score matrix


@dataclass(frozen=True)
class TeacherOptions:
    kind: str = "none"  # one of TEACHERS
    candidates: int = 16  # documents per text in a soft target
    temperature: float = 0.5  # of the softmax over standardised teacher scores

    def __post_init__(self) -> None:
        if self.kind not in TEACHERS:
            raise ValueError(f"unknown teacher {self.kind!r}; valid: {', '.join(TEACHERS)}")
        if self.candidates < 2 or self.temperature <= 0:
            raise ValueError("a teacher needs at least 2 candidates and a positive temperature")


@dataclass(frozen=True)
class SoftTargets:
    """Per training text: candidate document rows (into the namespace's documents) and their probabilities."""

    rows: np.ndarray  # (texts, candidates) int64
    probs: np.ndarray  # (texts, candidates) float32, rows sum to 1


def _standardise(x: np.ndarray) -> np.ndarray:
    return (x - x.mean(1, keepdims=True)) / (x.std(1, keepdims=True) + 1e-6)


class Teacher:
    """Scores texts against one namespace's documents (``passages`` and their unit ``vectors``). ``embed``
    gives texts' unit MiniLM embeddings (default: a ``TextEncoder``)."""

    def __init__(self, kind: str, passages: Sequence[str], vectors: np.ndarray | None,
                 device: torch.device | None = None, embed: Callable[[Sequence[str]], np.ndarray] | None = None) -> None:
        if kind == "none":
            kind = "fusion"  # the round-trip check alone still needs a ranking
        if kind not in TEACHERS:
            raise ValueError(f"unknown teacher {kind!r}; valid: {', '.join(TEACHERS)}")
        self.kind = kind
        self.size = len(passages)
        self._bm25 = Bm25(passages) if kind in ("bm25", "fusion") else None
        self._vectors = None
        self._embed = embed
        if kind in ("dense", "fusion"):
            if embed is None or vectors is None:
                from genret.data.embed import TextEncoder

                encoder = TextEncoder(device=device)
                self._embed = embed or (lambda texts: encoder.encode(list(texts)))
                vectors = vectors if vectors is not None else encoder.encode(list(passages), progress=True)
            self._vectors = vectors

    @property
    def vectors(self) -> np.ndarray | None:
        """The documents' unit embeddings, where the teacher ranks densely."""
        return self._vectors

    def embed(self, texts: Sequence[str]) -> np.ndarray | None:
        """The texts' unit embeddings where the teacher ranks densely (all at once: one encoder pass)."""
        return self._embed(texts) if self._embed is not None else None

    def scores(self, texts: Sequence[str], vectors: np.ndarray | None = None) -> np.ndarray:
        """(len(texts), documents) teacher scores; higher is more relevant. ``vectors``: the texts'
        embeddings from ``embed``, if already made."""
        parts = []
        if self._bm25 is not None:
            parts.append(self._bm25.scores(texts))
        if self._embed is not None and self._vectors is not None:
            parts.append((self._embed(texts) if vectors is None else vectors) @ self._vectors.T)
        if len(parts) == 1:
            return parts[0]
        return sum(_standardise(p) for p in parts) / len(parts)  # type: ignore[return-value]

    def rank(self, texts: Sequence[str], k: int) -> tuple[np.ndarray, np.ndarray]:
        """(len(texts), k) document rows, best first, and their scores."""
        k = min(k, self.size)
        rows = np.zeros((len(texts), k), dtype=np.int64)
        top = np.zeros((len(texts), k), dtype=np.float32)
        vectors = self.embed(texts)
        for s in range(0, len(texts), _CHUNK):
            sc = self.scores(texts[s : s + _CHUNK], None if vectors is None else vectors[s : s + _CHUNK])
            part = np.argpartition(-sc, k - 1, axis=1)[:, :k]
            order = np.argsort(-np.take_along_axis(sc, part, 1), axis=1, kind="stable")
            rows[s : s + len(sc)] = np.take_along_axis(part, order, 1)
            top[s : s + len(sc)] = np.take_along_axis(sc, rows[s : s + len(sc)], 1)
        return rows, top

    def soft_targets(self, texts: Sequence[str], labels: Sequence[int], candidates: int,
                     temperature: float) -> SoftTargets:
        """The teacher's top ``candidates`` per text with its own document (``labels``) put in place of the
        last when the teacher left it out, and the softmax of their scores over ``temperature``."""
        k = min(candidates, self.size)
        rows = np.zeros((len(texts), k), dtype=np.int64)
        probs = np.zeros((len(texts), k), dtype=np.float32)
        vectors = self.embed(texts)
        for s in range(0, len(texts), _CHUNK):
            sc = _standardise(self.scores(texts[s : s + _CHUNK], None if vectors is None else vectors[s : s + _CHUNK]))
            for j, row in enumerate(sc):
                own = int(labels[s + j])
                top = np.argpartition(-row, k - 1)[:k]
                if own not in top:
                    top[np.argmin(row[top])] = own
                z = row[top] / temperature
                p = np.exp(z - z.max())
                rows[s + j], probs[s + j] = top, p / p.sum()
        return SoftTargets(rows, probs)

    def round_trip(self, owners: Sequence[int], queries: Sequence[str], k: int) -> list[bool]:
        """Whether each query's own document (``owners``) is in the teacher's top ``k`` for it."""
        if not queries:
            return []
        rows, _ = self.rank(queries, k)
        return [int(o) in set(r.tolist()) for o, r in zip(owners, rows, strict=True)]

"""Docid schemes: how documents get short token sequences over a dedicated docid vocabulary.

Token ids 0 and 1 are PAD and EOS in every scheme; codes start at 2. A docid string names its tokens
(``"3-0-7"`` for semantic and residual-quantization codes, ``"17"`` for atomic, ``"flow-shear-plate"``
for keywords, the document id itself for naive) and is unique inside its namespace.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np

PAD = 0
EOS = 1
FIRST_CODE = 2
SCHEMES = ("semantic", "rq", "keyword", "atomic", "naive")
PLACED_BY_VECTOR = ("semantic", "rq")  # schemes whose docids come from document embeddings


class DocidCodec(ABC):
    """Maps docid strings to token ids (without EOS) and back."""

    name: str

    @property
    @abstractmethod
    def vocab_size(self) -> int: ...

    @property
    @abstractmethod
    def max_length(self) -> int:
        """Longest docid in tokens, EOS excluded."""

    @abstractmethod
    def encode(self, docid: str) -> list[int]: ...

    @abstractmethod
    def decode(self, tokens: Sequence[int]) -> str: ...

    @abstractmethod
    def to_json(self) -> dict[str, Any]: ...

    def encode_many(self, docids: Sequence[str]) -> np.ndarray:
        """(n, max_length + 1) int64: tokens, then EOS, then PAD."""
        out = np.full((len(docids), self.max_length + 1), PAD, dtype=np.int64)
        for i, d in enumerate(docids):
            toks = self.encode(d)
            out[i, : len(toks)] = toks
            out[i, len(toks)] = EOS
        return out


class SemanticCodec(DocidCodec):
    """Hierarchical codes: level ``l`` code ``c`` is token ``2 + l*branching + c``."""

    name = "semantic"

    def __init__(self, branching: int, depth: int) -> None:
        self.branching, self.depth = branching, depth

    @property
    def vocab_size(self) -> int:
        return FIRST_CODE + self.branching * self.depth

    @property
    def max_length(self) -> int:
        return self.depth

    def encode(self, docid: str) -> list[int]:
        codes = [int(c) for c in docid.split("-")]
        if len(codes) > self.depth or any(not 0 <= c < self.branching for c in codes):
            raise ValueError(f"docid '{docid}' does not fit branching {self.branching}, depth {self.depth}")
        return [FIRST_CODE + lvl * self.branching + c for lvl, c in enumerate(codes)]

    def decode(self, tokens: Sequence[int]) -> str:
        return "-".join(str((t - FIRST_CODE) - lvl * self.branching) for lvl, t in enumerate(tokens))

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "branching": self.branching, "depth": self.depth}


class AtomicCodec(DocidCodec):
    """One token per document: docid ``"n"`` is token ``2 + n``."""

    name = "atomic"

    def __init__(self, size: int) -> None:
        self.size = size

    @property
    def vocab_size(self) -> int:
        return FIRST_CODE + self.size

    @property
    def max_length(self) -> int:
        return 1

    def encode(self, docid: str) -> list[int]:
        if not (docid.isascii() and docid.isdigit()):
            raise ValueError(f"atomic docid '{docid}' is not a number")
        n = int(docid)
        if not 0 <= n < self.size:
            raise ValueError(f"atomic docid {n} outside 0..{self.size - 1}")
        return [FIRST_CODE + n]

    def decode(self, tokens: Sequence[int]) -> str:
        return str(tokens[0] - FIRST_CODE)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "size": self.size}


class NaiveCodec(DocidCodec):
    """The document's own id string, one token per character (DSI's naive string docids)."""

    name = "naive"

    def __init__(self, alphabet: str, max_len: int) -> None:
        self.alphabet, self.max_len = alphabet, max_len
        self._index = {ch: FIRST_CODE + i for i, ch in enumerate(alphabet)}

    @property
    def vocab_size(self) -> int:
        return FIRST_CODE + len(self.alphabet)

    @property
    def max_length(self) -> int:
        return self.max_len

    def encode(self, docid: str) -> list[int]:
        if not docid or len(docid) > self.max_len:
            raise ValueError(f"naive docid '{docid}' is empty or longer than {self.max_len}")
        try:
            return [self._index[ch] for ch in docid]
        except KeyError as exc:
            raise ValueError(f"naive docid '{docid}' uses a character outside the alphabet") from exc

    def decode(self, tokens: Sequence[int]) -> str:
        return "".join(self.alphabet[t - FIRST_CODE] for t in tokens)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "alphabet": self.alphabet, "max_len": self.max_len}


class KeywordCodec(DocidCodec):
    """Words as tokens (``genret.docids.keywords``): word ``i`` is token ``2 + i``, then suffixes ``#1``.. ``#n``."""

    name = "keyword"

    def __init__(self, words: Sequence[str], suffixes: int, max_len: int) -> None:
        self.words, self.suffixes, self.max_len = list(words), suffixes, max_len
        self._index = {w: FIRST_CODE + i for i, w in enumerate(self.words)}
        for n in range(1, suffixes + 1):
            self._index[f"#{n}"] = FIRST_CODE + len(self.words) + n - 1
        self._names = {t: w for w, t in self._index.items()}

    @property
    def vocab_size(self) -> int:
        return FIRST_CODE + len(self.words) + self.suffixes

    @property
    def max_length(self) -> int:
        return self.max_len

    def encode(self, docid: str) -> list[int]:
        parts = docid.split("-")
        if len(parts) > self.max_len or any(p not in self._index for p in parts):
            raise ValueError(f"keyword docid '{docid}' uses a word outside the index vocabulary or is too long")
        return [self._index[p] for p in parts]

    def decode(self, tokens: Sequence[int]) -> str:
        return "-".join(self._names[int(t)] for t in tokens)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "words": self.words, "suffixes": self.suffixes, "max_len": self.max_len}


def codec_from_json(spec: dict[str, Any]) -> DocidCodec:
    name = spec.get("name")
    if name == "semantic":
        return SemanticCodec(int(spec["branching"]), int(spec["depth"]))
    if name == "atomic":
        return AtomicCodec(int(spec["size"]))
    if name == "naive":
        return NaiveCodec(str(spec["alphabet"]), int(spec["max_len"]))
    if name == "keyword":
        return KeywordCodec([str(w) for w in spec["words"]], int(spec["suffixes"]), int(spec["max_len"]))
    raise ValueError(f"unknown docid scheme {name!r}; valid: {', '.join(SCHEMES)}")


# --- assignment --------------------------------------------------------------------------------


def hierarchical_kmeans(embeddings: np.ndarray, branching: int, seed: int) -> list[list[int]]:
    """Code paths from recursive k-means (DSI semantic docids).

    A cluster with more than ``branching`` members is split by k-means into ``branching`` clusters;
    a cluster with at most ``branching`` members gives each member its position as the last code,
    which makes every path unique.
    """
    from sklearn.cluster import KMeans

    paths: list[list[int]] = [[] for _ in range(len(embeddings))]

    def split(members: np.ndarray, depth: int) -> None:
        if len(members) <= branching:
            for pos, m in enumerate(members):
                paths[m].append(pos)
            return
        km = KMeans(n_clusters=branching, n_init=1, random_state=seed + depth, max_iter=100)
        labels = km.fit_predict(embeddings[members])
        if len(np.unique(labels)) == 1:  # identical points: split by position to guarantee progress
            labels = np.arange(len(members)) % branching
        for c in range(branching):
            sub = members[labels == c]
            for m in sub:
                paths[m].append(c)
            if len(sub):
                split(sub, depth + 1)

    split(np.arange(len(embeddings)), 0)
    return paths


def residual_quantization(embeddings: np.ndarray, codebook: int, seed: int) -> list[list[int]]:
    """Residual-quantization codes (RQ semantic IDs): level ``l`` is the nearest of ``codebook`` k-means
    centroids of what levels ``< l`` left unexplained, over ``ceil(log_codebook(n))`` levels; a last level
    numbers the documents that share all codes, which makes every path unique."""
    from sklearn.cluster import KMeans

    n = len(embeddings)
    levels = max(1, math.ceil(math.log(max(n, 2)) / math.log(codebook)))
    residual = embeddings.astype(np.float64)
    codes = np.zeros((n, levels), dtype=np.int64)
    for lvl in range(levels):
        k = min(codebook, n)
        km = KMeans(n_clusters=k, n_init=1, random_state=seed + lvl, max_iter=100).fit(residual)
        codes[:, lvl] = km.labels_
        residual = residual - km.cluster_centers_[km.labels_]
    seen: dict[tuple[int, ...], int] = {}
    paths = []
    for row in codes.tolist():
        key = tuple(row)
        seen[key] = seen.get(key, -1) + 1
        paths.append([*row, seen[key]])
    return paths


def assign_atomic(n: int, first: int = 0) -> list[str]:
    return [str(i) for i in range(first, first + n)]


def assign_naive(doc_ids: Sequence[str]) -> list[str]:
    if len(set(doc_ids)) != len(doc_ids):
        raise ValueError("naive docids need unique document ids")
    return list(doc_ids)


def build_codec(scheme: str, docids_by_tenant: dict[str, list[str]], branching: int,
                headroom: int = 0, words: Sequence[str] = ()) -> DocidCodec:
    """The smallest codec of ``scheme`` that covers every tenant's docids. Semantic and RQ codecs get
    ``headroom`` more levels, so documents added later can go below a full cluster; keyword codecs spell
    with ``words`` (every label word, most common first) and keep suffixes to spare."""
    all_ids = [d for ids in docids_by_tenant.values() for d in ids]
    if scheme in PLACED_BY_VECTOR:
        depth = max((len(d.split("-")) for d in all_ids), default=1)
        widest = max((int(c) + 1 for d in all_ids for c in d.split("-")), default=1)
        return SemanticCodec(max(branching, widest), depth + headroom)
    if scheme == "keyword":
        parts = [d.split("-") for d in all_ids]
        used = max((int(p[1:]) for ps in parts for p in ps if p.startswith("#")), default=1)
        return KeywordCodec(words, used + 16, max((len(ps) for ps in parts), default=1) + 1)
    if scheme == "atomic":
        return AtomicCodec(max((int(d) + 1 for d in all_ids), default=1))
    if scheme == "naive":
        alphabet = "".join(sorted({ch for d in all_ids for ch in d}))
        return NaiveCodec(alphabet, max((len(d) for d in all_ids), default=1))
    raise ValueError(f"unknown docid scheme {scheme!r}; valid: {', '.join(SCHEMES)}")


def assign_docids(scheme: str, doc_ids: Sequence[str], embeddings: np.ndarray | None,
                  branching: int = 10, seed: int = 0, texts: Sequence[tuple[str, str]] = (),
                  first_atomic: int = 0) -> list[str]:
    """Docids for one namespace, in the order of ``doc_ids``; deterministic for a seed. Semantic and RQ
    docids need ``embeddings``, keyword docids ``texts`` as (title, text); atomic docids count up from
    ``first_atomic``."""
    if scheme in PLACED_BY_VECTOR:
        if embeddings is None:
            raise ValueError(f"{scheme} docids need document embeddings")
        paths = hierarchical_kmeans(embeddings, branching, seed) if scheme == "semantic" \
            else residual_quantization(embeddings, branching, seed)
        return ["-".join(map(str, p)) for p in paths]
    if scheme == "keyword":
        from genret.docids.keywords import keyword_docids

        if len(texts) != len(doc_ids):
            raise ValueError("keyword docids need the (title, text) of every document")
        return keyword_docids(texts)
    if scheme == "atomic":
        return assign_atomic(len(doc_ids), first_atomic)
    if scheme == "naive":
        return assign_naive(doc_ids)
    raise ValueError(f"unknown docid scheme {scheme!r}; valid: {', '.join(SCHEMES)}")

"""Training pairs for indexing: what text should lead the model to which docid.

Indexing pairs (DSI): the title with the start of the text, and fixed-size word windows (chunks) of the
text. Rehearsal pairs (SE-DSI): the document's key sentences, those closest to the whole document by
TF-IDF cosine. Generated-query pairs (DSI-QG) come from ``genret.indexing.querygen``. Retrieval pairs: real
training queries with their relevant documents, where a dataset has them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Pair:
    text: str
    doc_key: str  # the document's id in its corpus
    kind: str  # one of KINDS


KINDS = ("doc", "chunk", "rehearsal", "generated", "query")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def passage(title: str, text: str) -> str:
    """The document as one passage: its title, then its text."""
    return f"{title}. {text}" if title and not text.startswith(title) else (text or title)


def chunks(text: str, words: int, stride: int) -> list[str]:
    toks = text.split()
    if len(toks) <= words:
        return [" ".join(toks)] if toks else []
    return [" ".join(toks[s : s + words]) for s in range(0, len(toks) - words + stride, stride)
            if toks[s : s + words]]


def document_pairs(docs: Sequence[tuple[str, str, str]], chunk_words: int = 64, chunk_stride: int = 48,
                   max_chunks: int = 8) -> list[Pair]:
    """(doc_key, title, text) -> one title+text pair and up to ``max_chunks`` window pairs per document."""
    out = []
    for key, title, text in docs:
        head = passage(title, text)
        if head.strip():
            out.append(Pair(head, key, "doc"))
        for c in chunks(text, chunk_words, chunk_stride)[1 : max_chunks + 1]:
            out.append(Pair(f"{title}. {c}" if title else c, key, "chunk"))
    return out


def query_pairs(queries: Mapping[str, str], qrels: Mapping[str, Mapping[str, int]],
                known: set[str]) -> list[Pair]:
    """Each judged (query, relevant document) of the corpus as a pair."""
    out = []
    for qid, rels in qrels.items():
        if qid not in queries:
            continue
        for doc_key, grade in rels.items():
            if grade > 0 and doc_key in known:
                out.append(Pair(queries[qid], doc_key, "query"))
    return out


def sentences(text: str, min_words: int = 5) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text) if len(s.split()) >= min_words]


def key_sentences(docs: Sequence[tuple[str, str, str]], per_doc: int) -> dict[str, list[str]]:
    """Rehearsal contents: each document's ``per_doc`` sentences closest to the whole document (TF-IDF
    cosine, IDF over this set of documents), in their order in the text."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    if per_doc <= 0 or not docs:
        return {key: [] for key, _, _ in docs}
    vec = TfidfVectorizer(stop_words="english", sublinear_tf=True).fit([passage(t, x) for _, t, x in docs])
    out: dict[str, list[str]] = {}
    for key, title, text in docs:
        sents = sentences(text)
        if len(sents) <= 1:  # the document pair already holds it
            out[key] = []
            continue
        m = vec.transform([passage(title, text), *sents])  # rows are L2-normalised
        sims = (m[1:] @ m[0].T).toarray().ravel()
        best = sorted(np.argsort(-sims, kind="stable")[:per_doc].tolist())
        out[key] = [sents[i] for i in best]
    return out


def text_pairs(texts: Mapping[str, Sequence[str]], kind: str) -> list[Pair]:
    """One pair per (document key, text)."""
    return [Pair(t, key, kind) for key, ts in texts.items() for t in ts]

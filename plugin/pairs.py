"""Training pairs for indexing: what text should lead the model to which docid.

Indexing pairs (DSI): the title with the start of the text, and fixed-size word windows (chunks) of the
text. Retrieval pairs: real training queries with their relevant documents, where a dataset has them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Pair:
    text: str
    doc_key: str  # the document's id in its corpus
    kind: str  # "doc", "chunk" or "query"


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
        head = f"{title}. {text}" if title and not text.startswith(title) else (text or title)
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

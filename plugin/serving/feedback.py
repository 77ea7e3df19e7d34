"""Pseudo-relevance feedback for the generative list.

A query's decoded candidates are scored a second time by the model, for the query followed by the text
of its top candidate (title and text, cut to ``FEEDBACK_TOKENS`` encoder tokens, as the default build cuts
a document's text when it trains on it), and each candidate's score becomes its log-probability for the
query plus ``weight`` times its log-probability for that longer text. A document the model places near the
top document moves up; one the query alone ranked high by chance moves down.

The candidates stay the ones the tenant's own decoding found (under the query's filter), and the only text
read is the tenant's own top document, through a tenant-checked Qdrant read: feedback sees nothing outside
the tenant. It costs one more encoder pass over a longer text and the scoring of the candidates already
found (no second beam search).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from genret.store import StoredDoc

FEEDBACK_TOKENS = 128  # the default build's max_input_tokens: how much of a document's text it trains on


def feedback_text(query: str, top: StoredDoc) -> str:
    """The text the candidates are scored for a second time: the query, then its top document."""
    return " ".join(part for part in (query.strip(), top.title.strip(), top.text.strip()) if part)


def rescored(candidates: Sequence[tuple[str, str, float]], again: Mapping[str, float],
             weight: float) -> list[tuple[str, str, float]]:
    """(point id, docid, score) of each candidate with ``weight`` times its second score (``again``) added,
    best first. A candidate with no second score (the pass that found it and the one that scores it read
    one snapshot, so none is expected) follows them, in its order: no candidate is lost."""
    scored = [(pid, docid, score + weight * again[pid]) for pid, docid, score in candidates if pid in again]
    return sorted(scored, key=lambda c: -c[2]) + [c for c in candidates if c[0] not in again]

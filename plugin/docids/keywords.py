"""Human-readable docids from keywords (SE-DSI's semantic, readable identifiers).

A document's docid is a few of its title's most distinctive words (highest TF-IDF within its namespace,
from the start of its text when it has no title), written from the most common word to the rarest, so
documents about the same subject share prefixes in the trie: ``flow-boundary-layer-shear``. Documents
that would get the same words are told apart by a suffix token ``#2``, ``#3``, ...

The vocabulary lists words by document frequency, most frequent first; a word's position is therefore
its generality, which is how words are ordered inside a docid, including for documents added later.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence

WORD = re.compile(r"[a-z][a-z0-9]{2,}")
SUFFIX = "#"
HEAD_WORDS = 40  # words of text that stand in for a missing title


def words(text: str) -> list[str]:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return [w for w in WORD.findall(text.lower()) if w not in ENGLISH_STOP_WORDS]


def _label_words(title: str, text: str) -> list[str]:
    return words(title) or words(" ".join(text.split()[:HEAD_WORDS]))


def vocabulary(docs: Sequence[tuple[str, str]]) -> list[str]:
    """Every label word of ``(title, text)`` documents, by document frequency (descending), then A-Z."""
    df = Counter(w for title, text in docs for w in set(_label_words(title, text)))
    return sorted(df, key=lambda w: (-df[w], w))


def unique(bases: Iterable[str], taken: set[str]) -> list[str]:
    """Each base docid, with the smallest ``-#n`` suffix (n ≥ 2) that no earlier one or ``taken`` has."""
    out = []
    used = set(taken)
    for base in bases:
        docid, n = base, 1
        while docid in used:
            n += 1
            docid = f"{base}-{SUFFIX}{n}"
        used.add(docid)
        out.append(docid)
    return out


def keyword_docids(docs: Sequence[tuple[str, str]], per_doc: int = 3) -> list[str]:
    """Docids for ``(title, text)`` documents of one namespace, in order."""
    label = [_label_words(title, text) for title, text in docs]
    df = Counter(w for ws in label for w in set(ws))
    rank = {w: i for i, w in enumerate(sorted(df, key=lambda w: (-df[w], w)))}
    n = len(docs)
    bases = []
    for ws in label:
        tf = Counter(ws)
        scored = sorted(tf, key=lambda w: (-tf[w] * math.log((1 + n) / (1 + df[w])), ws.index(w)))
        bases.append("-".join(sorted(scored[:per_doc], key=rank.__getitem__)) or f"{SUFFIX}1")
    return unique(bases, set())


def place(vocab: Sequence[str], title: str, text: str, taken: set[str], per_doc: int = 3) -> str | None:
    """A docid for a document added later, spelled only with ``vocab`` words: its rarest known label words
    (falling back to its text), or None when it has none."""
    rank = {w: i for i, w in enumerate(vocab)}
    known = list(dict.fromkeys(w for w in words(title) if w in rank)) or \
        list(dict.fromkeys(w for w in words(text) if w in rank))
    if not known:
        return None
    chosen = sorted(known, key=rank.__getitem__)[-per_doc:]
    return unique(["-".join(chosen)], taken)[0]

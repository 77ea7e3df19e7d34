"""BM25 over texts that change: a write indexes only the texts it brings, and every score is the one a
fresh index of the texts held now would give.

The texts live in segments, each indexed once, term-major (a term's postings are contiguous). A write adds
one segment for its texts and marks the rows it replaces or removes dead; segments merge as a binary
counter does (a segment is merged with the next when it is at most twice its size), so there are about
log2(texts) of them and a text is re-indexed about that many times over its life. Nothing about a term's
weight is stored: document frequencies, the text count and the mean length are read at query time from
the live rows, so a score never depends on texts removed or replaced, or on the order of the writes.

Okapi BM25 as ``genret.data.lexical.Bm25`` scores it (bm25s's Lucene variant: the same words, k1 and b,
idf = ln(1 + (N - df + 0.5) / (df + 0.5))), which the tests hold it to.

A search reads one version (an immutable snapshot, swapped in whole by a write), so searches run beside a
write without a lock. Writes must come one at a time.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

import numpy as np

from genret.data.lexical import K1, B, words

_NO_ROWS = np.zeros(0, np.int32)
_NO_COUNTS = np.zeros(0, np.float32)


@dataclass(frozen=True, eq=False)
class _Segment:
    """Texts indexed together: the postings of term ``terms[i]`` are rows ``rows[starts[i]:starts[i + 1]]``
    (ascending) with counts ``counts[...]``."""

    keys: tuple[str, ...]  # row -> its text's key
    lengths: np.ndarray  # (rows,) words in each text
    terms: np.ndarray  # (terms,) int64, ascending
    starts: np.ndarray  # (terms + 1,) int64
    rows: np.ndarray  # (postings,) int32
    counts: np.ndarray  # (postings,) float32: times the term occurs in the row's text

    @property
    def size(self) -> int:
        return len(self.keys)

    def postings(self, term: int) -> tuple[np.ndarray, np.ndarray]:
        """The rows holding ``term`` and how often each holds it."""
        i = int(np.searchsorted(self.terms, term))
        if i == len(self.terms) or self.terms[i] != term:
            return _NO_ROWS, _NO_COUNTS
        a, b = int(self.starts[i]), int(self.starts[i + 1])
        return self.rows[a:b], self.counts[a:b]

    def triples(self, alive: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(term, row, count) of every posting of a live row, rows renumbered to count live rows only."""
        term = np.repeat(self.terms, np.diff(self.starts))
        keep = alive[self.rows]
        renumbered = np.cumsum(alive) - 1
        return term[keep], renumbered[self.rows[keep]], self.counts[keep]


def _segment(keys: Sequence[str], term: np.ndarray, row: np.ndarray, count: np.ndarray,
             lengths: np.ndarray) -> _Segment:
    """A segment from its postings in any order."""
    order = np.lexsort((row, term))
    term, row, count = term[order], row[order], count[order]
    terms, first = np.unique(term, return_index=True)
    starts = np.append(first, len(term)).astype(np.int64)
    return _Segment(tuple(keys), lengths.astype(np.int64), terms.astype(np.int64), starts,
                    row.astype(np.int32), count.astype(np.float32))


@dataclass(frozen=True)
class Tokenized:
    """Texts tokenized and counted under term ids of their own (term ``i`` is ``words[i]``): the work of
    indexing them, which the caller may do elsewhere (another process) before a write puts them in."""

    keys: tuple[str, ...]  # row -> its text's key; a key repeated keeps its last text
    words: tuple[str, ...]
    term: np.ndarray  # (postings,) int64, into ``words``
    row: np.ndarray  # (postings,) int64
    count: np.ndarray  # (postings,) int64
    lengths: np.ndarray  # (rows,) int64


def tokenized(texts: Sequence[tuple[str, str]]) -> Tokenized:
    """``texts`` (key, text) made ready for ``WritableBm25.write``."""
    last = dict(texts)
    local: dict[str, int] = {}
    ids = [[local.setdefault(w, len(local)) for w in ws] for ws in words(list(last.values()))] if last else []
    lengths = np.array([len(t) for t in ids], np.int64)
    flat = np.fromiter((t for row in ids for t in row), np.int64, count=int(lengths.sum()))
    rows = max(len(ids), 1)
    pairs, count = np.unique(flat * rows + np.repeat(np.arange(len(ids), dtype=np.int64), lengths), return_counts=True)
    term, row = np.divmod(pairs, rows)
    return Tokenized(tuple(last), tuple(local), term, row, count, lengths)


def _indexed(tokens: Tokenized, vocab: dict[str, int]) -> _Segment:
    """A segment of ``tokens``, their new words added to ``vocab``."""
    ids = np.fromiter((vocab.setdefault(w, len(vocab)) for w in tokens.words), np.int64, count=len(tokens.words))
    return _segment(tokens.keys, ids[tokens.term], tokens.row, tokens.count, tokens.lengths)


def _live_keys(segments: Sequence[_Segment], alive: Sequence[np.ndarray]) -> list[str]:
    return [k for seg, live in zip(segments, alive, strict=True) for k, a in zip(seg.keys, live.tolist(), strict=True) if a]


@dataclass(frozen=True)
class _Version:
    """What a search reads: the segments, which of their rows are live, and the live totals."""

    segments: tuple[_Segment, ...]
    alive: tuple[np.ndarray, ...]  # (segment rows,) bool, one per segment
    vocab: dict[str, int]  # word -> term id; writes add words, never change an id (a full merge makes a new one)
    texts: int  # live rows
    words: int  # words in the live rows


class WritableBm25:
    """BM25 over ``(key, text)`` pairs; ``write`` replaces or removes texts by key. It pickles, so another
    process can build it."""

    def __init__(self, texts: Sequence[tuple[str, str]]) -> None:
        vocab: dict[str, int] = {}
        seg = _indexed(tokenized(texts), vocab)
        self._now = _Version((seg,), (np.ones(seg.size, bool),), vocab, seg.size, int(seg.lengths.sum()))
        self._where: dict[str, tuple[_Segment, int]] | None = None  # key -> its live row; made on first write

    @property
    def size(self) -> int:
        """Texts held."""
        return self._now.texts

    def keys(self) -> list[str]:
        """The keys of the texts held."""
        return _live_keys(self._now.segments, self._now.alive)

    def write(self, texts: Sequence[tuple[str, str]] | Tokenized, removed: Collection[str] = ()) -> None:
        """Hold ``texts`` (key, text; or ``tokenized`` made of them) in place of any texts of the same keys,
        and drop those of ``removed``."""
        tokens = texts if isinstance(texts, Tokenized) else tokenized(texts)
        now = self._now
        where = self._locations(now)
        position = {id(seg): i for i, seg in enumerate(now.segments)}
        alive = list(now.alive)
        copied: set[int] = set()
        n, length = now.texts, now.words
        for key in [*removed, *tokens.keys]:
            found = where.pop(key, None)
            if found is None:
                continue
            i, row = position[id(found[0])], found[1]
            if i not in copied:
                alive[i], copied = alive[i].copy(), copied | {i}
            alive[i][row] = False
            n, length = n - 1, length - int(found[0].lengths[row])
        vocab = now.vocab
        segments = list(now.segments)
        if tokens.keys:
            new = _indexed(tokens, vocab)
            segments.append(new)
            alive.append(np.ones(new.size, bool))
            where.update((k, (new, r)) for r, k in enumerate(new.keys))
            n, length = n + new.size, length + int(new.lengths.sum())
        kept = [i for i, a in enumerate(alive) if a.any()]
        segments, alive = [segments[i] for i in kept], [alive[i] for i in kept]
        while segments:
            if 2 * n < sum(seg.size for seg in segments):  # more dead rows than live: merge them all away
                merged, vocab = self._merge(segments, alive, vocab)
                segments, alive = [merged], [np.ones(merged.size, bool)]
            elif len(segments) > 1 and segments[-2].size <= 2 * segments[-1].size:
                merged, _ = self._merge(segments[-2:], alive[-2:], None)
                segments[-2:], alive[-2:] = [merged], [np.ones(merged.size, bool)]
            else:
                break
            where.update((k, (merged, r)) for r, k in enumerate(merged.keys))
        self._now = _Version(tuple(segments), tuple(alive), vocab, n, length)

    def top(self, text: str, k: int,
            within: Callable[[Sequence[str]], Collection[str]] | None = None) -> list[tuple[str, float]]:
        """The best ``k`` texts for ``text`` with a positive score, best first (ties in the order held);
        ``within`` (given keys, the ones to keep) limits them."""
        now = self._now
        query = Counter(now.vocab[w] for w in words([text])[0] if w in now.vocab)
        if k <= 0 or not query or not now.texts:
            return []
        mean = now.words / now.texts
        totals = [np.zeros(seg.size) for seg in now.segments]
        for term, times in query.items():
            found = []
            for i, seg in enumerate(now.segments):
                rows, counts = seg.postings(term)
                live = now.alive[i][rows]
                found.append((i, rows[live], counts[live]))
            df = sum(len(rows) for _, rows, _ in found)
            if not df:
                continue
            idf = math.log(1 + (now.texts - df + 0.5) / (df + 0.5))
            for i, rows, counts in found:
                lengths = now.segments[i].lengths[rows]
                totals[i][rows] += times * idf * counts / (K1 * (1 - B + B * lengths / mean) + counts)
        picked = [(i, np.flatnonzero(t > 0)) for i, t in enumerate(totals)]
        scores = np.concatenate([totals[i][rows] for i, rows in picked])
        seg_of = np.concatenate([np.full(len(rows), i) for i, rows in picked])
        row_of = np.concatenate([rows for _, rows in picked])
        if within is not None:
            keys = [now.segments[i].keys[r] for i, r in zip(seg_of.tolist(), row_of.tolist(), strict=True)]
            kept = set(within(keys))
            mask = np.fromiter((key in kept for key in keys), bool, count=len(keys))
            scores, seg_of, row_of = scores[mask], seg_of[mask], row_of[mask]
        if len(scores) > k:  # all that reach the k-th best score, then the first k of them in order
            floor = np.partition(scores, len(scores) - k)[len(scores) - k]
            reach = np.flatnonzero(scores >= floor)
        else:
            reach = np.arange(len(scores))
        best = reach[np.argsort(-scores[reach], kind="stable")][:k].tolist()
        return [(now.segments[seg_of[j]].keys[row_of[j]], float(scores[j])) for j in best]

    def _locations(self, now: _Version) -> dict[str, tuple[_Segment, int]]:
        if self._where is None:
            self._where = {k: (seg, r) for seg, alive in zip(now.segments, now.alive, strict=True)
                           for r, k in enumerate(seg.keys) if alive[r]}
        return self._where

    @staticmethod
    def _merge(segments: Sequence[_Segment], alive: Sequence[np.ndarray],
               vocab: dict[str, int] | None) -> tuple[_Segment, dict[str, int]]:
        """One segment of the live rows of ``segments``, in order. With ``vocab`` (all segments merged), the
        words no live row holds leave it and the term ids are renumbered: the new segment and vocabulary."""
        terms, rows, counts, offset = [], [], [], 0
        for seg, live in zip(segments, alive, strict=True):
            t, r, c = seg.triples(live)
            terms.append(t)
            rows.append(r + offset)
            counts.append(c)
            offset += int(live.sum())
        term = np.concatenate(terms)
        out_vocab = vocab if vocab is not None else {}
        if vocab is not None:
            used = np.unique(term)
            renumber = np.full(len(vocab), -1, np.int64)
            renumber[used] = np.arange(len(used))
            term = renumber[term]
            out_vocab = {w: int(renumber[i]) for w, i in vocab.items() if renumber[i] >= 0}
        keys = _live_keys(segments, alive)
        lengths = np.concatenate([seg.lengths[live] for seg, live in zip(segments, alive, strict=True)])
        return _segment(keys, term, np.concatenate(rows), np.concatenate(counts), lengths), out_vocab

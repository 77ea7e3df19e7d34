"""What the model is trained on for a set of documents, and what is kept to replay them later.

Per document: its title and text, word windows, rehearsal contents (key sentences, SE-DSI), generated
queries (DSI-QG: sampled by a ``QueryGenerator``, ranked, cached) and real training queries where a
dataset has them. The replay memory (DSI++'s generative memory) keeps, per document, its generated
queries, or its key sentences, or the start of its text: ``genret index --add`` replays these for old
documents while it trains new ones.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from genret.indexing.pairs import KINDS, Pair, document_pairs, key_sentences, passage, query_pairs, text_pairs
from genret.indexing.querygen import (
    INSTRUCTION,
    BiEncoderRanker,
    CrossEncoderRanker,
    GenerationBudget,
    QueryCache,
    QueryRanker,
    SamplingSettings,
    candidate_queries,
    generator_id,
    load_generator,
    select_queries,
    split_scores,
    uncached,
)
from genret.indexing.teacher import Teacher

log = logging.getLogger(__name__)

Doc = tuple[str, str, str]  # (doc_key, title, text)
MEMORY_PER_DOC = 3
MEMORY_HEAD_WORDS = 48


@dataclass(frozen=True)
class PairOptions:
    chunk_words: int = 64
    chunk_stride: int = 48
    max_chunks: int = 8
    rehearsal: int = 0  # key sentences per document
    generated_queries: int = 0  # generated queries kept per document; 0: generate none
    query_samples: int = 4  # candidates sampled per document
    query_generator: str = "default"  # "default" (packaged SmolLM2) or a local checkpoint path
    query_ranker: str = "minilm"  # "minilm" or a local cross-encoder checkpoint path
    query_batch: int = 16  # documents per generation batch
    query_input_tokens: int = 128  # passage tokens the generator sees
    round_trip: int = 0  # keep a generated query only if the teacher ranks its document in the top this many
    query_instruction: str = INSTRUCTION  # what the generator is asked to write (chat-template generators)


@dataclass(frozen=True)
class TrainingQueries:
    """Real training queries: ``{query_id: text}`` and ``{query_id: {doc_id: grade}}``."""

    queries: Mapping[str, str]
    qrels: Mapping[str, Mapping[str, int]]


@dataclass(frozen=True)
class DocumentData:
    pairs: list[Pair]
    memory: dict[str, list[str]]  # doc key -> texts to replay it by
    generated: int  # documents whose queries were generated now (not read from the cache)
    without_generated: int = 0  # documents with no generated query: not reached in the time budget, or none kept

    def counts(self) -> dict[str, int]:
        return {k: sum(1 for p in self.pairs if p.kind == k) for k in KINDS}


class _TeacherRanker(QueryRanker):
    """MiniLM cosine to the document, read from a dense teacher of the same documents (in the same order):
    what ``BiEncoderRanker`` computes, without encoding the passages again, and the candidates' embeddings
    are the teacher's for the round trip."""

    def __init__(self, teacher: Teacher, vectors: np.ndarray) -> None:
        self.teacher = teacher
        self.vectors = vectors

    def score(self, passages: Sequence[str], queries: Sequence[Sequence[str]]) -> list[np.ndarray]:
        flat = [q for qs in queries for q in qs]
        owner = np.repeat(np.arange(len(passages)), [len(qs) for qs in queries])
        emb = self.teacher.embed(flat) if flat else None
        sims = (emb * self.vectors[owner]).sum(-1) if emb is not None else np.zeros(0, np.float32)
        return split_scores(sims, queries)


def _ranker(name: str, device: torch.device, teacher: Teacher | None = None) -> QueryRanker:
    if name == "minilm" and teacher is not None and teacher.vectors is not None:
        return _TeacherRanker(teacher, teacher.vectors)
    return BiEncoderRanker(device) if name == "minilm" else CrossEncoderRanker(name, device)


def _sampling(options: PairOptions) -> SamplingSettings:
    return SamplingSettings(max_input_tokens=options.query_input_tokens, instruction=options.query_instruction)


def waiting_for_generation(docs: Sequence[Doc], options: PairOptions, cache: QueryCache) -> int:
    """How many of ``docs`` still need their queries generated: none in ``cache`` from this generator."""
    if options.generated_queries <= 0:
        return 0
    name = generator_id(options.query_generator, _sampling(options))
    return len(uncached([QueryCache.key(name, passage(title, text)) for _, title, text in docs], cache))


def generated_queries(docs: Sequence[Doc], options: PairOptions, cache: QueryCache, device: torch.device,
                      progress: bool = True, teacher: Teacher | None = None,
                      budget: GenerationBudget | None = None) -> tuple[dict[str, list[str]], int]:
    """The kept generated queries of each document, and how many documents had to be generated. With
    ``options.round_trip`` the ``teacher`` checks every candidate first: the best of those that lead
    back to their document are kept. ``budget``: how long generating may take (see ``candidate_queries``)."""
    settings = _sampling(options)
    name = generator_id(options.query_generator, settings)
    passages = [passage(title, text) for _, title, text in docs]
    cands, fresh = candidate_queries(name, lambda: load_generator(options.query_generator, device, settings),
                                     cache, passages, options.query_samples,
                                     options.query_batch, progress, budget)
    missing = sum(1 for c in cands if not c)
    log.info("generated queries: %d documents from the cache, %d generated%s", len(docs) - fresh - missing, fresh,
             f", {missing} without" if missing else "")
    check = options.round_trip > 0 and teacher is not None
    kept = select_queries(_ranker(options.query_ranker, device, teacher if check else None), passages, cands,
                          options.query_samples if check else options.generated_queries)
    if check:
        assert teacher is not None
        owners = [i for i, qs in enumerate(kept) for _ in qs]
        passed = iter(teacher.round_trip(owners, [q for qs in kept for q in qs], options.round_trip))
        before = sum(len(qs) for qs in kept)
        kept = [[q for q in qs if next(passed)] for qs in kept]
        log.info("round trip (teacher top %d): %d of %d generated queries lead back to their document",
                 options.round_trip, sum(len(qs) for qs in kept), before)
        kept = [qs[: options.generated_queries] for qs in kept]
    return {key: q for (key, _, _), q in zip(docs, kept, strict=True)}, fresh


def document_data(docs: Sequence[Doc], options: PairOptions, device: torch.device, cache: QueryCache,
                  training_queries: TrainingQueries | None = None, progress: bool = True,
                  teacher: Teacher | None = None, budget: GenerationBudget | None = None) -> DocumentData:
    """Training pairs and replay memory for one namespace's documents (``teacher``: that namespace's, for
    the round-trip check of generated queries)."""
    pairs = document_pairs(docs, options.chunk_words, options.chunk_stride, options.max_chunks)
    rehearsal = key_sentences(docs, options.rehearsal)
    pairs += text_pairs(rehearsal, "rehearsal")
    generated: dict[str, list[str]] = {}
    fresh = 0
    if options.generated_queries > 0:
        generated, fresh = generated_queries(docs, options, cache, device, progress, teacher, budget)
        pairs += text_pairs(generated, "generated")
    if training_queries is not None:
        pairs += query_pairs(training_queries.queries, training_queries.qrels, {k for k, _, _ in docs})
    memory = {}
    for key, title, text in docs:
        head = [" ".join(passage(title, text).split()[:MEMORY_HEAD_WORDS])]
        memory[key] = (generated.get(key) or rehearsal.get(key) or head)[:MEMORY_PER_DOC]
    without = sum(1 for k, _, _ in docs if not generated.get(k)) if options.generated_queries > 0 else 0
    return DocumentData(pairs, memory, fresh, without)


def replay_pairs(memory: list[dict[str, Any]], live: set[tuple[str, str]], count: int,
                 seed: int) -> tuple[list[str], list[str]]:
    """``count`` (text, docid) pairs of old documents still present: documents drawn evenly (each once
    before any twice), one of their memory texts each."""
    pool = [m for m in memory if (m["tenant"], m["doc_id"]) in live and m["texts"]]
    if not pool or count <= 0:
        return [], []
    rng = random.Random(seed)
    picks: list[dict[str, Any]] = []
    while len(picks) < count:
        picks += rng.sample(pool, min(len(pool), count - len(picks)))
    return [rng.choice(m["texts"]) for m in picks], [m["docid"] for m in picks]

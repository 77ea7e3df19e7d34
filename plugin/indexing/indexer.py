"""`genret index`: read documents from Qdrant, assign docids, train the model, write the index.

``build_index`` trains a new index from all documents. ``add_documents`` (``genret index --add``) trains
the documents an index does not know yet into it, DSI++-style: existing docids never change, new ones are
placed beside their nearest neighbours, and each new training pair comes with ``replay`` pairs of old
documents from the index's replay memory, so the model does not forget them.

Order of effects, both ways: train and write the new index into a staging directory, then write docids
into the Qdrant payloads, then move the staging directory into place. A failure before the payload write
leaves Qdrant and the old index untouched.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genret.data.index_dir import (
    DOCIDS,
    MEMORY,
    MODEL_DIR,
    Manifest,
    ModelSpec,
    library_versions,
    publish,
    query_cache_path,
    read_manifest,
    staging_dir,
    utc_now,
    write_manifest,
)
from genret.decoding.model import load_trained, seed_docid_embeddings
from genret.docids import PLACED_BY_VECTOR, AtomicCodec, DocidCodec, assign_docids, build_codec
from genret.docids.keywords import vocabulary
from genret.docids.placement import TenantDocids, docid_for
from genret.indexing.distributed import SINGLE, Ranks, share
from genret.indexing.encoder_layers import layers_below
from genret.indexing.frozen_states import FrozenStates
from genret.indexing.models import (
    build_default_model,
    build_tiny_model,
    encoder_depth,
    grow_docid_vocab,
    load_checkpoint_for_docids,
)
from genret.indexing.pairs import KINDS, passage
from genret.indexing.querygen import GenerationBudget, QueryCache
from genret.indexing.teacher import Teacher, TeacherOptions
from genret.indexing.training import TrainConfig, TrainStats, train
from genret.indexing.training_data import (
    PairOptions,
    TrainingQueries,
    document_data,
    replay_pairs,
    waiting_for_generation,
)
from genret.store import QdrantStore, StoredDoc, text_hash

log = logging.getLogger(__name__)

__all__ = ["AddOptions", "IndexOptions", "TrainingQueries", "add_documents", "build_index"]


@dataclass(frozen=True)
class IndexOptions:
    scheme: str = "semantic"
    branching: int = 10
    docid_headroom: int = 1  # extra semantic levels for documents added later
    model: str = "default"  # "default", "tiny" or a local HF seq2seq checkpoint path
    decoder_layers: int = 3
    docid_init: str = "random"  # "embeddings": atomic docid rows start at their documents' MiniLM vectors
    query_skip: float = 0.0  # with "embeddings": the query's MiniLM embedding, times this, joins the first step
    spare_docids: int = 256  # atomic: free tokens for documents upserted before the next --add
    pairs: PairOptions = field(default_factory=PairOptions)
    teacher: TeacherOptions = field(default_factory=TeacherOptions)
    query_cache: str | None = None  # default: beside the index (index_dir.query_cache_path)
    train: TrainConfig = field(default_factory=TrainConfig)


@dataclass(frozen=True)
class AddOptions:
    replay: float = 1.0  # old-document pairs replayed per new pair
    pairs: PairOptions = field(default_factory=PairOptions)
    query_cache: str | None = None
    train: TrainConfig = field(default_factory=TrainConfig)


@dataclass(frozen=True)
class _Trained:
    """One tenant's documents with their docids, for the index files."""

    tenant: str
    docs: list[StoredDoc]
    docids: list[str]


def _doc_embeddings(docs: list[StoredDoc], device: torch.device) -> np.ndarray:
    if docs and all(d.vector is not None for d in docs):
        return np.stack([d.vector for d in docs])  # type: ignore[misc]
    from genret.data.embed import TextEncoder

    log.info("no stored vectors: embedding %d documents with MiniLM", len(docs))
    return TextEncoder(device=device).encode([f"{d.title}. {d.text}" for d in docs], progress=True)


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def _write_jsonl(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    with path.open("w") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")


def train_state_path(index_dir: str | Path) -> Path:
    """Where a build keeps its training state between epochs (resumed by a rerun, removed when published)."""
    target = Path(index_dir)
    return target.with_name(target.name + ".train-state.pt")


def _train(model: Any, tokenizer: Any, spec: ModelSpec, codec: DocidCodec, texts: list[str], docids: list[str],
           cfg: TrainConfig, device: torch.device, staging: Path | None, index_dir: str | Path,
           ranks: Ranks = SINGLE, soft: tuple[torch.Tensor, torch.Tensor] | None = None,
           states: dict[str, torch.Tensor] | None = None) -> TrainStats:
    labels = codec.encode_many(docids)
    rows = [row[: int((row != 0).sum())] for row in labels]

    stats = train(model, tokenizer, spec, texts, rows, cfg, device, ranks=ranks,
                  state_path=train_state_path(index_dir), soft=soft, known_states=states)
    if ranks.main:
        assert staging is not None  # rank 0's
        model.save_pretrained(staging / MODEL_DIR)
        tokenizer.save_pretrained(staging / MODEL_DIR)
        log.info("model saved after training (%s steps)", stats.steps)
    return stats


def _finish(store: QdrantStore, index_dir: str | Path, staging: Path, manifest: Manifest,
            records: list[dict[str, Any]], memory: list[dict[str, Any]], new: list[_Trained]) -> Manifest:
    _write_jsonl(staging / DOCIDS, records)
    _write_jsonl(staging / MEMORY, memory)
    write_manifest(staging, manifest)
    for part in new:  # each text's hash too, so replicas following the collection need not read the texts
        store.write_docids(part.tenant, [(d.point_id, docid) for d, docid in zip(part.docs, part.docids, strict=True)],
                           [(d.point_id, text_hash(d.title, d.text)) for d in part.docs])
    publish(staging, index_dir)
    train_state_path(index_dir).unlink(missing_ok=True)
    return manifest


def _rows(parts: list[_Trained], memory: dict[tuple[str, str], list[str]]) -> tuple[list[dict[str, Any]],
                                                                                     list[dict[str, Any]]]:
    records, mem = [], []
    for p in parts:
        for d, docid in zip(p.docs, p.docids, strict=True):
            records.append({"tenant": p.tenant, "point_id": d.point_id, "doc_id": d.doc_id, "docid": docid})
            mem.append({"tenant": p.tenant, "doc_id": d.doc_id, "docid": docid,
                        "texts": memory.get((p.tenant, d.doc_id), [])})
    return records, mem


@dataclass
class _Pairs:
    """Training texts and docids of a set of documents, with what else came out of making them."""

    texts: list[str] = field(default_factory=list)
    docids: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    memory: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    generated: int = 0  # documents whose queries were generated now
    generated_by: dict[str, int] = field(default_factory=dict)  # the same, per tenant
    without_generated: int = 0  # documents with no generated query
    generation_s: float = 0.0  # time spent generating
    soft_tokens: list[np.ndarray] = field(default_factory=list)  # per namespace, with teacher targets
    soft_probs: list[np.ndarray] = field(default_factory=list)

    def soft(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        if not self.soft_tokens:
            return None
        return torch.from_numpy(np.concatenate(self.soft_tokens)), torch.from_numpy(np.concatenate(self.soft_probs))


def _pairs(parts: list[_Trained], options: PairOptions, device: torch.device, cache: Path,
           training_queries: TrainingQueries | None, teacher: TeacherOptions | None = None,
           vectors: list[np.ndarray] | None = None, codec: DocidCodec | None = None,
           states: FrozenStates | None = None, others: list[list[StoredDoc]] | None = None,
           budget: GenerationBudget | None = None) -> _Pairs:
    """Training pairs of ``parts``. With a ``teacher`` (and the parts' document ``vectors``), each
    namespace's teacher checks its generated queries (``options.round_trip``) and, unless its kind is
    none, gives every pair soft targets over that namespace's docids (one token each, from ``codec``).
    ``states``: the teacher embeds texts through them, keeping their encoder states for training.
    ``others``: more documents of each part's namespace the teacher ranks too (after the part's own, as
    ``vectors`` has them), so a round trip is checked against every document of the namespace; soft
    targets then cannot be asked for. ``budget``: the time query generation may take, over all parts;
    each part's share is in proportion to its documents waiting for generation, so a tenant that comes
    first cannot take the others' time."""
    if others is not None and teacher is not None and teacher.kind != "none":
        raise ValueError("teacher targets over documents outside the trained parts are not supported")
    out = _Pairs()
    budget = budget if budget is not None else GenerationBudget()
    all_docs = [[(d.doc_id, d.title, d.text) for d in p.docs] for p in parts]
    queries = QueryCache(cache)
    waiting = [0] * len(parts)
    if budget.seconds is not None:  # each part's share follows the documents it still waits for
        waiting = [waiting_for_generation(docs, options, queries) for docs in all_docs]
    for n, (p, docs) in enumerate(zip(parts, all_docs, strict=True)):
        judge = None
        if teacher is not None and (teacher.kind != "none" or options.round_trip > 0):
            pool = p.docs + (others[n] if others is not None else [])
            judge = Teacher(teacher.kind, [passage(d.title, d.text) for d in pool], vectors[n] if vectors else None,
                            device, states.embed if states is not None else None)
        share = budget.share(waiting[n], sum(waiting[n:]))
        data = document_data(docs, options, device, queries, training_queries, teacher=judge, budget=share)
        budget.take(share)
        by_key = dict(zip([d.doc_id for d in p.docs], p.docids, strict=True))
        texts = [x.text for x in data.pairs]
        out.texts += texts
        out.docids += [by_key[x.doc_key] for x in data.pairs]
        out.counts = {k: out.counts[k] + v for k, v in data.counts().items()}
        out.memory.update({(p.tenant, k): v for k, v in data.memory.items()})
        out.generated += data.generated
        out.generated_by[p.tenant] = data.generated
        out.without_generated += data.without_generated
        if judge is not None and teacher is not None and teacher.kind != "none":
            assert codec is not None
            row_of = {d.doc_id: i for i, d in enumerate(p.docs)}
            targets = judge.soft_targets(texts, [row_of[x.doc_key] for x in data.pairs], teacher.candidates,
                                         teacher.temperature)
            tokens = np.array([codec.encode(d)[0] for d in p.docids], dtype=np.int64)
            out.soft_tokens.append(tokens[targets.rows])
            out.soft_probs.append(targets.probs)
    out.generation_s = budget.spent
    return out


GENERATION_SHARE = 0.5  # of --max-minutes, at most, for query generation; training gets the rest


def _generation_budget(train: TrainConfig) -> GenerationBudget:
    return GenerationBudget(None if train.max_minutes is None else train.max_minutes * 60 * GENERATION_SHARE)


def _after_generation(train: TrainConfig, pairs: _Pairs) -> TrainConfig:
    """The training settings with what query generation spent taken from the time budget (the encoder pass
    and the epochs keep at least the share generation may not take)."""
    if train.max_minutes is None or not pairs.generation_s:
        return train
    left = max(train.max_minutes - pairs.generation_s / 60, train.max_minutes * (1 - GENERATION_SHARE))
    return replace(train, max_minutes=left)


def _generation_record(pairs: _Pairs) -> dict[str, Any]:
    return {"queries_generated_for": pairs.generated, "queries_generated_by_tenant": pairs.generated_by,
            "without_generated_queries": pairs.without_generated, "query_generation_s": round(pairs.generation_s, 1)}


DOCID_INITS = ("random", "embeddings")


def _neutral_rows(model: Any, spec: ModelSpec, codec: AtomicCodec, first: int) -> None:
    """Spare atomic tokens from ``first`` on get zero rows until a document is seeded into them."""
    spare = list(range(first, codec.size))
    if spare:
        seed_docid_embeddings(model, spec, [codec.encode(str(n))[0] for n in spare],
                              np.zeros((len(spare), model.get_output_embeddings().weight.shape[1]), np.float32))


def check_index_options(options: IndexOptions) -> None:
    """What cannot work together, refused before anything is read or written: option pairs, and a cut of
    the encoder's layers outside the encoder (read from a local checkpoint's config)."""
    if options.pairs.round_trip < 0 or options.query_skip < 0 or options.train.listwise_weight < 0:
        raise ValueError("--round-trip, --query-skip and --listwise-weight cannot be negative")
    if options.docid_init not in DOCID_INITS:
        raise ValueError(f"unknown docid init {options.docid_init!r}; valid: {', '.join(DOCID_INITS)}")
    if options.docid_init == "embeddings" and options.scheme != "atomic":
        raise ValueError("docid init 'embeddings' needs atomic docids (one token per document): --scheme atomic")
    if options.query_skip and options.docid_init != "embeddings":
        raise ValueError("a query skip needs docid rows in the encoder's embedding space: --docid-init embeddings")
    if options.teacher.kind != "none" and options.scheme != "atomic":
        raise ValueError(f"teacher targets ({options.teacher.kind}) need atomic docids (one token per document): "
                         "--scheme atomic, or --teacher none")
    if options.train.train_encoder_layers:
        layers_below(encoder_depth(options.model), options.train.train_encoder_layers)


@dataclass(frozen=True)
class _Plan:
    """What rank 0 reads and works out before training, and hands to every rank."""

    parts: list[_Trained]
    codec: DocidCodec
    pairs: _Pairs
    vectors: list[np.ndarray]
    states: dict[str, torch.Tensor] | None  # frozen encoder states the teacher computed (one process only)


def _plan(store: QdrantStore, index_dir: str | Path, options: IndexOptions, device: torch.device,
          training_queries: TrainingQueries | None, one_process: bool = True) -> _Plan:
    tenants = store.tenants()
    if not tenants:
        raise ValueError(f"collection '{store.collection}' has no documents with a "
                         f"'{store.config.tenant_key}' field: load documents first")
    teaching = options.teacher.kind != "none" or options.pairs.round_trip > 0
    by_vector = options.scheme in PLACED_BY_VECTOR or options.docid_init == "embeddings" or teaching
    parts: list[_Trained] = []
    vectors: list[np.ndarray] = []
    words: list[str] = []
    for t in tenants:
        docs = list(store.scroll_tenant(t, with_vectors=by_vector))
        emb = _doc_embeddings(docs, device) if by_vector else None
        # atomic docids count on across tenants: each docid token, and its model row, is one document
        docids = assign_docids(options.scheme, [d.doc_id for d in docs], emb, options.branching,
                               options.train.seed, [(d.title, d.text) for d in docs],
                               first_atomic=sum(len(p.docs) for p in parts))
        parts.append(_Trained(t, docs, docids))
        if emb is not None:
            vectors.append(emb)
    if options.scheme == "keyword":
        words = vocabulary([(d.title, d.text) for p in parts for d in p.docs])
    codec = build_codec(options.scheme, {p.tenant: p.docids for p in parts}, options.branching,
                        options.docid_headroom, words)
    if isinstance(codec, AtomicCodec):
        codec = AtomicCodec(codec.size + options.spare_docids)
    log.info("docids: scheme=%s vocab=%d max_length=%d", options.scheme, codec.vocab_size, codec.max_length)

    cache = Path(options.query_cache) if options.query_cache else query_cache_path(index_dir)
    states = None  # the default model's frozen encoder is the teacher's MiniLM: one encoder pass serves both
    if teaching and one_process and options.model == "default" and options.train.freeze_encoder:
        states = FrozenStates(device, options.train.max_input_tokens, options.train.batch_size * 2,
                              options.train.progress, options.train.encoder_cache)
    pairs = _pairs(parts, options.pairs, device, cache, training_queries, options.teacher if teaching else None,
                   vectors or None, codec, states, budget=_generation_budget(options.train))
    log.info("training pairs: %s%s", ", ".join(f"{n:,} {kind}" for kind, n in pairs.counts.items()),
             f"; {options.teacher.kind} teacher targets" if pairs.soft_tokens else "")
    return _Plan(parts, codec, pairs, vectors, states.states if states is not None else None)


def build_index(store: QdrantStore | None, index_dir: str | Path, options: IndexOptions, device: torch.device,
                training_queries: TrainingQueries | None = None, ranks: Ranks = SINGLE) -> Manifest | None:
    """Train a new index of every document in the collection. Under ``torchrun`` every rank calls this:
    rank 0 (the only one given a ``store``) plans, all train, rank 0 writes and returns the manifest; the
    other ranks return None."""
    check_index_options(options)
    if ranks.main:
        assert store is not None, "rank 0 reads the collection"
        plan: _Plan | None = _plan(store, index_dir, options, device, training_queries, not ranks.active)
    else:
        plan = None
    plan = share(plan, ranks)
    parts, codec = plan.parts, plan.codec

    if options.model == "default":
        model, tokenizer, spec = build_default_model(codec.vocab_size, options.decoder_layers,
                                                     codec.max_length + 1, options.train.seed)
    elif options.model == "tiny":
        model, tokenizer, spec = build_tiny_model(codec.vocab_size, max_docid_len=codec.max_length + 1,
                                                  seed=options.train.seed)
    else:
        model, tokenizer, spec = load_checkpoint_for_docids(options.model, codec.vocab_size)
    spec = replace(spec, query_skip=options.query_skip)
    if options.docid_init == "embeddings":
        tokens = [codec.encode(d)[0] for p in parts for d in p.docids]
        seed_docid_embeddings(model, spec, tokens, np.concatenate(plan.vectors))
        _neutral_rows(model, spec, codec, len(tokens))
    staging = staging_dir(index_dir) if ranks.main else None
    stats = _train(model, tokenizer, spec, codec, plan.pairs.texts, plan.pairs.docids,
                   _after_generation(options.train, plan.pairs), device, staging, index_dir, ranks, plan.pairs.soft(),
                   plan.states)
    if not ranks.main:
        return None
    assert store is not None and staging is not None

    training = {"options": {k: v for k, v in asdict(options).items() if k != "train"},
                "config": asdict(options.train), "pairs": plan.pairs.counts, "stats": stats.to_json(),
                **_generation_record(plan.pairs), "device": str(device), "processes": ranks.world}
    manifest = Manifest(collection=store.collection, tenant_key=store.config.tenant_key,
                        codec=codec.to_json(), model=asdict(spec),
                        tenants={p.tenant: len(p.docids) for p in parts}, training=training,
                        docid_key=store.docid_key)
    records, mem = _rows(parts, plan.pairs.memory)
    return _finish(store, index_dir, staging, manifest, records, mem, parts)


def add_documents(store: QdrantStore, index_dir: str | Path, options: AddOptions, device: torch.device,
                  training_queries: TrainingQueries | None = None) -> Manifest:
    """Train the collection's documents that the index was not trained on into it."""
    old = read_manifest(index_dir)
    if old.docid_key != store.docid_key:
        raise ValueError(f"index {index_dir} keeps its docids in payload field '{old.docid_key}': add to it with "
                         f"--docid-key {old.docid_key}")
    codec, spec = old.docid_codec(), old.model_spec
    records = _read_jsonl(Path(index_dir) / DOCIDS)
    memory = _read_jsonl(Path(index_dir) / MEMORY)
    trained = {(r["tenant"], r["doc_id"]) for r in records}
    built = old.training.get("options", {})
    seeded = built.get("docid_init") == "embeddings"
    by_vector = built.get("scheme", "semantic") in PLACED_BY_VECTOR or seeded
    new_parts: list[_Trained] = []
    live: set[tuple[str, str]] = set()
    checked = options.pairs.round_trip > 0 and options.pairs.generated_queries > 0
    scanned = [(t, list(store.scroll_tenant(t, with_vectors=by_vector or checked))) for t in store.tenants()]
    next_atomic = 0  # atomic: the first token after every docid in use, in any tenant
    if isinstance(codec, AtomicCodec):
        next_atomic = 1 + max((int(d.docid) for _, docs in scanned for d in docs if d.docid), default=-1)
    for t, docs in scanned:
        live |= {(t, d.doc_id) for d in docs}
        state = TenantDocids(codec)
        for d in docs:
            if d.docid:  # trained, or placed by an upsert since: keeps its docid
                state.add(d.docid, d.vector)
        fresh = [d for d in docs if (t, d.doc_id) not in trained]
        docids = []
        for d in fresh:
            if d.docid:
                docid = d.docid
            elif isinstance(codec, AtomicCodec):  # a new token (and model row) of its own
                docid, next_atomic = str(next_atomic), next_atomic + 1
            else:
                docid = docid_for(codec, state, d.doc_id, d.vector, d.title, d.text)
                state.add(docid, d.vector)
            docids.append(docid)
        if fresh:
            new_parts.append(_Trained(t, fresh, docids))
    if not new_parts:
        raise ValueError(f"every document of collection '{store.collection}' is already in the index")
    records = [r for r in records if (r["tenant"], r["doc_id"]) in live]
    memory = [m for m in memory if (m["tenant"], m["doc_id"]) in live]

    cache = Path(options.query_cache) if options.query_cache else query_cache_path(index_dir)
    teacher, vectors, others = None, None, None
    if checked:  # a new document's generated query must lead back to it among all its tenant's documents
        fresh_ids = {(p.tenant, d.doc_id) for p in new_parts for d in p.docs}
        tenant_docs = dict(scanned)
        others = [[d for d in tenant_docs[p.tenant] if (p.tenant, d.doc_id) not in fresh_ids] for p in new_parts]
        vectors = [_doc_embeddings(p.docs + rest, device) for p, rest in zip(new_parts, others, strict=True)]
        teacher = TeacherOptions()
    made = _pairs(new_parts, options.pairs, device, cache, training_queries, teacher, vectors, others=others,
                  budget=_generation_budget(options.train))
    texts, docids, counts = made.texts, made.docids, made.counts
    r_texts, r_docids = replay_pairs(memory, live, round(options.replay * len(texts)), options.train.seed)
    log.info("adding %d documents: pairs %s, %d replayed", sum(len(p.docs) for p in new_parts), counts,
             len(r_texts))
    model, tokenizer = load_trained(Path(index_dir) / MODEL_DIR)
    train_cfg = options.train
    grown = codec
    if isinstance(codec, AtomicCodec):  # room for the new tokens, and spare ones after them
        grown = AtomicCodec(max(codec.size, next_atomic + int(built.get("spare_docids", 0))))
        spec = grow_docid_vocab(model, spec, grown.size - codec.size)
    if seeded and isinstance(grown, AtomicCodec):  # new documents start at their embeddings
        seed_docid_embeddings(model, spec, [grown.encode(d)[0] for p in new_parts for d in p.docids],
                              np.concatenate([_doc_embeddings(p.docs, device) for p in new_parts]))
        _neutral_rows(model, spec, grown, next_atomic)
        if old.training.get("config", {}).get("freeze_docid_embeddings"):
            train_cfg = replace(train_cfg, freeze_docid_embeddings=True)
    staging = staging_dir(index_dir)
    stats = _train(model, tokenizer, spec, grown, texts + r_texts, docids + r_docids,
                   _after_generation(train_cfg, made), device, staging, index_dir)

    addition = {"added": {p.tenant: len(p.docs) for p in new_parts}, "pairs": counts, "replayed": len(r_texts),
                "options": {k: v for k, v in asdict(options).items() if k != "train"},
                "config": asdict(train_cfg), "stats": stats.to_json(), **_generation_record(made)}
    tenants = dict(old.tenants)
    for p in new_parts:
        tenants[p.tenant] = tenants.get(p.tenant, 0) + len(p.docs)
    training = {**old.training, "additions": [*old.training.get("additions", []), addition]}
    manifest = replace(old, codec=grown.to_json(), model=asdict(spec), tenants=tenants, training=training,
                       created_at=utc_now(), versions=library_versions())
    new_records, new_mem = _rows(new_parts, made.memory)
    return _finish(store, index_dir, staging, manifest, records + new_records, memory + new_mem, new_parts)

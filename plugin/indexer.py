"""`genret index`: read documents from Qdrant, assign docids, train the model, write the index.

Order of effects: train and write the new index into a staging directory, then write docids into the
Qdrant payloads, then move the staging directory into place. A failure before the payload write leaves
Qdrant and the old index untouched.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from genret.docids import assign_docids, build_codec
from genret.index_dir import DOCIDS, MODEL_DIR, Manifest, publish, staging_dir, write_manifest
from genret.modeling import build_default_model, build_tiny_model, load_checkpoint_for_docids
from genret.pairs import Pair, document_pairs, query_pairs
from genret.store import QdrantStore, StoredDoc
from genret.train import TrainConfig, train

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IndexOptions:
    scheme: str = "semantic"
    branching: int = 10
    docid_headroom: int = 1  # extra semantic levels for documents upserted later
    model: str = "default"  # "default", "tiny" or a local HF seq2seq checkpoint path
    decoder_layers: int = 3
    chunk_words: int = 64
    chunk_stride: int = 48
    max_chunks: int = 8
    train: TrainConfig = field(default_factory=TrainConfig)


@dataclass(frozen=True)
class TrainingQueries:
    """Real training queries: ``{query_id: text}`` and ``{query_id: {doc_id: grade}}``."""

    queries: Mapping[str, str]
    qrels: Mapping[str, Mapping[str, int]]


def _doc_embeddings(docs: list[StoredDoc], device: torch.device) -> np.ndarray:
    if docs and all(d.vector is not None for d in docs):
        return np.stack([d.vector for d in docs])  # type: ignore[misc]
    from genret.embed import TextEncoder

    log.info("no stored vectors: embedding %d documents with MiniLM", len(docs))
    return TextEncoder(device=device).encode([f"{d.title}. {d.text}" for d in docs], progress=True)


def build_index(store: QdrantStore, index_dir: str | Path, options: IndexOptions, device: torch.device,
                training_queries: TrainingQueries | None = None) -> Manifest:
    tenants = store.tenants()
    if not tenants:
        raise ValueError(f"collection '{store.collection}' has no documents with a "
                         f"'{store.config.tenant_key}' field: load documents first")
    docs_by_tenant = {t: list(store.scroll_tenant(t, with_vectors=options.scheme == "semantic"))
                      for t in tenants}
    docids_by_tenant: dict[str, list[str]] = {}
    for t, docs in docs_by_tenant.items():
        emb = _doc_embeddings(docs, device) if options.scheme == "semantic" else None
        docids_by_tenant[t] = assign_docids(options.scheme, [d.doc_id for d in docs], emb,
                                            options.branching, options.train.seed)
    codec = build_codec(options.scheme, docids_by_tenant, options.branching, options.docid_headroom)
    log.info("docids: scheme=%s vocab=%d max_length=%d", codec.name, codec.vocab_size, codec.max_length)

    pairs: list[tuple[Pair, str]] = []  # (pair, docid)
    for t, docs in docs_by_tenant.items():
        by_key = dict(zip([d.doc_id for d in docs], docids_by_tenant[t], strict=True))
        dp = document_pairs([(d.doc_id, d.title, d.text) for d in docs], options.chunk_words,
                            options.chunk_stride, options.max_chunks)
        if training_queries is not None:
            dp += query_pairs(training_queries.queries, training_queries.qrels, set(by_key))
        pairs += [(p, by_key[p.doc_key]) for p in dp]
    kinds = {k: sum(1 for p, _ in pairs if p.kind == k) for k in ("doc", "chunk", "query")}
    log.info("training pairs: %s", kinds)

    if options.model == "default":
        model, tokenizer, spec = build_default_model(codec.vocab_size, options.decoder_layers,
                                                     codec.max_length + 1, options.train.seed)
    elif options.model == "tiny":
        model, tokenizer, spec = build_tiny_model(codec.vocab_size, max_docid_len=codec.max_length + 1,
                                                  seed=options.train.seed)
    else:
        model, tokenizer, spec = load_checkpoint_for_docids(options.model, codec.vocab_size)

    labels = codec.encode_many([d for _, d in pairs])
    label_rows = [row[: int((row != 0).sum())] for row in labels]
    staging = staging_dir(index_dir)

    def checkpoint(epoch: int) -> None:
        model.save_pretrained(staging / MODEL_DIR)
        tokenizer.save_pretrained(staging / MODEL_DIR)
        log.info("checkpoint after epoch %d", epoch)

    stats = train(model, tokenizer, spec, [p.text for p, _ in pairs], label_rows, options.train, device,
                  on_epoch=checkpoint)
    checkpoint(-1)

    point_docids = {t: [(d.point_id, docid) for d, docid in zip(docs, docids_by_tenant[t], strict=True)]
                    for t, docs in docs_by_tenant.items()}
    with (staging / DOCIDS).open("w") as f:
        for t, docs in docs_by_tenant.items():
            for d, docid in zip(docs, docids_by_tenant[t], strict=True):
                f.write(json.dumps({"tenant": t, "point_id": d.point_id, "doc_id": d.doc_id,
                                    "docid": docid}) + "\n")
    training = {"options": {k: v for k, v in asdict(options).items() if k != "train"},
                "config": asdict(options.train), "pairs": kinds, "stats": stats.to_json(),
                "device": str(device)}
    manifest = Manifest(collection=store.collection, tenant_key=store.config.tenant_key,
                        codec=codec.to_json(), model=asdict(spec),
                        tenants={t: len(v) for t, v in docids_by_tenant.items()}, training=training)
    write_manifest(staging, manifest)
    for t, items in point_docids.items():
        store.write_docids(t, items)
    publish(staging, index_dir)
    return manifest

"""Load a BEIR corpus into the Qdrant collection under one tenant, optionally with MiniLM vectors."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from genret.data.beir import load_corpus
from genret.data.embed import EMBED_DIM, TextEncoder
from genret.store import QdrantStore

log = logging.getLogger(__name__)


def load_beir(store: QdrantStore, folder: str | Path, tenant: str, with_vectors: bool = True,
              device: torch.device | None = None, limit: int | None = None) -> int:
    """Upsert the corpus (idempotent: point ids derive from tenant and document id). Returns the count."""
    if not tenant:
        raise ValueError("a tenant name is required")
    docs = load_corpus(folder)[:limit]
    store.ensure_collection(EMBED_DIM if with_vectors else None)
    if with_vectors and not store.has_vectors():
        raise ValueError(f"collection '{store.collection}' exists without dense vectors; "
                         "load with --no-vectors or use a new collection")
    vectors = None
    if with_vectors:
        vectors = TextEncoder(device=device).encode([f"{d.title}. {d.text}" for d in docs], progress=True)
    store.upsert_documents(tenant, [(d.doc_id, d.title, d.text) for d in docs], vectors)
    log.info("loaded %d documents into %s (tenant %s)", len(docs), store.collection, tenant)
    return len(docs)

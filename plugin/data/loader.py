"""Load a BEIR corpus into the Qdrant collection under one tenant, optionally with MiniLM vectors.

Every field of a corpus record other than ``_id``, ``title`` and ``text`` (BEIR's ``metadata``, say) is kept
in the point's payload, with more fields from a ``payload_fields`` JSONL file or a ``derive`` function;
genret's own payload fields win a clash."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from genret.data.beir import Document, load_corpus, read_payload_fields
from genret.store import QdrantStore

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


def load_beir(store: QdrantStore, folder: str | Path, tenant: str, with_vectors: bool = True,
              device: torch.device | None = None, limit: int | None = None,
              payload_fields: str | Path | None = None,
              derive: Callable[[Document], dict[str, Any]] | None = None) -> int:
    """Upsert the corpus (idempotent: point ids derive from tenant and document id). Returns the count."""
    if not tenant:
        raise ValueError("a tenant name is required")
    docs = load_corpus(folder)[:limit]
    vectors = None
    if with_vectors:
        from genret.data.embed import EMBED_DIM, TextEncoder  # torch and transformers only to embed

        store.ensure_collection(EMBED_DIM)
        if not store.has_vectors():
            raise ValueError(f"collection '{store.collection}' exists without dense vectors; "
                             "load with --no-vectors or use a new collection")
        vectors = TextEncoder(device=device).encode([f"{d.title}. {d.text}" for d in docs], progress=True)
    else:
        store.ensure_collection(None)
    more = read_payload_fields(payload_fields) if payload_fields else {}
    payloads = [{**d.fields, **more.get(d.doc_id, {}), **(derive(d) if derive else {})} for d in docs]
    store.upsert_documents(tenant, [(d.doc_id, d.title, d.text) for d in docs], vectors,
                           extras=[(p, {}) for p in payloads])
    log.info("loaded %d documents into %s (tenant %s)", len(docs), store.collection, tenant)
    return len(docs)

"""The domain values the API layer and the engine exchange, and the engine as the API layer sees it.

Torch-free on purpose: the gRPC servicers import this module and never the engine's, so the API layer
loads without the model stack.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol

PointId = str  # a Qdrant point id (UUID string), derived from (tenant, document id)
Checkpoint = Callable[[], None]  # called between decoding steps (the scheduler may run other work there)


class Mode(Enum):
    GENERATIVE = "generative"
    DENSE = "dense"
    HYBRID = "hybrid"
    AUTO = "auto"


class Fusion(Enum):
    DEFAULT = "default"  # DBSF
    RRF = "rrf"
    DBSF = "dbsf"
    LEARNED = "learned"
    RESCORE = "rescore"
    WEIGHTED = "weighted"


@dataclass(frozen=True)
class Ranked:
    """One retriever's hit: point id, raw score, 1-based rank."""

    point_id: str
    score: float
    rank: int


@dataclass(frozen=True)
class SearchQuery:
    """One query as a caller states it; zero and None mean "the server's default"."""

    tenant: str
    text: str
    top_k: int = 0
    beams: int = 0
    mode: Mode = Mode.GENERATIVE
    score_threshold: float | None = None
    with_payload: bool = False
    index: str = ""
    fusion: Fusion = Fusion.DEFAULT
    min_probability: float | None = None
    filter: dict[str, Any] | None = None  # Qdrant's filter model, as its REST API writes it
    lexical: bool = True  # HYBRID and AUTO also fuse BM25 over the tenant's documents (if the server does)
    feedback: float | None = None  # weight of the generative list's feedback score; None: the server's


@dataclass(frozen=True)
class SearchHit:
    point_id: str
    docid: str
    score: float
    retriever: str
    payload: dict[str, Any]
    sources: tuple[Ranked, ...] = ()  # one per retriever that returned the point, in retriever order
    source_names: tuple[str, ...] = ()
    probability: float | None = None


@dataclass(frozen=True)
class NamespaceStats:
    tenant: str
    documents: int
    trie_nodes: int


@dataclass(frozen=True)
class IndexStats:
    index: str
    docid_scheme: str
    docid_vocab_size: int
    max_docid_length: int
    model: str
    created_at: str
    genret_version: str
    namespaces: list[NamespaceStats]


@dataclass(frozen=True)
class NewDocument:
    doc_id: str
    title: str
    text: str
    payload: dict[str, Any] = field(default_factory=dict)  # more payload fields, stored as they are
    vectors: dict[str, list[float]] = field(default_factory=dict)  # the caller's own named vectors

    @property
    def size(self) -> int:
        """Characters the document holds (title, text and payload as JSON): what write limits count."""
        import json

        extra = len(json.dumps(self.payload, default=str)) if self.payload else 0
        return len(self.title) + len(self.text) + extra


@dataclass(frozen=True)
class Upserted:
    doc_id: str
    point_id: PointId
    docid: str
    created: bool


@dataclass(frozen=True)
class Deleted:
    deleted: list[str] = field(default_factory=list)
    not_found: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Synced:
    """What a front-door write changed in a tenant's namespace: points given docids, points taken out."""

    assigned: int
    removed: int


class SearchService(Protocol):
    """What the API layer needs of the engine (``genret.serving.engine.Engine`` provides it)."""

    @property
    def collection(self) -> str: ...

    @property
    def on_accelerator(self) -> bool: ...

    def search(self, queries: Sequence[SearchQuery], deadline: float | None = None,
               checkpoint: Checkpoint | None = None) -> list[list[SearchHit]]: ...

    def prepared(self, q: SearchQuery) -> bool:
        """Whether the search's tenant-only work (``prepare``) is already done."""

    def prepare(self, q: SearchQuery) -> None:
        """Work the search needs that is its tenant's alone, done before it joins a batch."""

    def searching(self, tenant: str) -> AbstractContextManager[None]:
        """One search of the tenant in flight: what ``prepare`` made for it is kept until the search ends."""

    def upsert(self, tenant: str, docs: Sequence[NewDocument], index: str = "") -> list[Upserted]: ...

    def delete(self, tenant: str, doc_ids: Sequence[str], index: str = "") -> Deleted: ...

    def sync(self, tenant: str, point_ids: Sequence[str]) -> Synced: ...

    def info(self, tenant: str = "") -> IndexStats: ...

    def ping(self) -> bool: ...

    def follow(self) -> list[str]: ...

"""Live document changes: upserts and deletes, Qdrant first, then the tenant's trie.

Qdrant is the system of record, so every change is written there first (points carry their docid in the
payload) and only then published as a new namespace snapshot. If the Qdrant call fails nothing is
published; if it may have been applied in part, the tenant's namespace is re-read from Qdrant, so the
sidecar never disagrees with Qdrant and never hands out a docid twice. A process killed at any point
restarts from Qdrant in the same way. Writes are serialised; searches never wait for them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from genret.allocate import TenantDocids, docid_for
from genret.config import Config
from genret.docids import AtomicCodec, DocidCodec
from genret.errors import InvalidArgument
from genret.namespaces import Namespaces
from genret.store import PointId, QdrantStore, point_id_for

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class NewDocument:
    doc_id: str
    title: str
    text: str


@dataclass(frozen=True)
class Upserted:
    doc_id: str
    point_id: PointId
    docid: str
    created: bool


@dataclass(frozen=True)
class Deleted:
    deleted: list[str]
    not_found: list[str]


Embed = Callable[[Sequence[str]], np.ndarray]
Seed = Callable[[Sequence[str], np.ndarray], None]  # (new docids, their document vectors)


class DocumentWriter:
    def __init__(self, config: Config, store: QdrantStore, codec: DocidCodec, embed: Embed,
                 current: Callable[[], Namespaces], publish: Callable[[Namespaces], None],
                 seed: Seed | None = None) -> None:
        """``seed``, when given, is called with each new docid and its vector after Qdrant holds them and
        before they are published (an embedding-seeded index gives them their model rows)."""
        self.config = config
        self.store = store
        self.codec = codec
        self._embed = embed
        self._seed = seed
        self._current = current
        self._publish = publish
        self._lock = threading.Lock()
        self._states: dict[str, TenantDocids] = {}
        self._atomic: set[str] | None = None  # atomic docids of every tenant (see TenantDocids)

    # --- validation ----------------------------------------------------------------------------
    def _check_tenant(self, tenant: str) -> None:
        if not tenant:
            raise InvalidArgument("tenant is required")
        if len(tenant) > 256:
            raise InvalidArgument("tenant names are at most 256 characters")

    def _check_ids(self, ids: Sequence[str], what: str) -> None:
        cfg = self.config
        if not ids:
            raise InvalidArgument(f"{what} is empty")
        if len(ids) > cfg.max_write_batch:
            raise InvalidArgument(f"{len(ids)} {what}; the limit per call is {cfg.max_write_batch}")
        for i, doc_id in enumerate(ids):
            if not doc_id or len(doc_id) > 256:
                raise InvalidArgument(f"{what}[{i}]: a document id has 1..256 characters")
        if len(set(ids)) != len(ids):
            raise InvalidArgument(f"{what} repeat a document id")

    def _check_docs(self, docs: Sequence[NewDocument]) -> None:
        self._check_ids([d.doc_id for d in docs], "documents")
        for i, d in enumerate(docs):
            if not d.text.strip() and not d.title.strip():
                raise InvalidArgument(f"documents[{i}] ('{d.doc_id}') has neither title nor text")
            if len(d.text) + len(d.title) > self.config.max_document_chars:
                raise InvalidArgument(f"documents[{i}] ('{d.doc_id}') is longer than "
                                      f"{self.config.max_document_chars} characters")

    # --- state ---------------------------------------------------------------------------------
    def _state(self, tenant: str) -> TenantDocids:
        """The tenant's taken docids with their embeddings, read from Qdrant on first use."""
        state = self._states.get(tenant)
        if state is None:
            if self._atomic is None and isinstance(self.codec, AtomicCodec):
                self._atomic = set(self._current().docids)
            state = TenantDocids(self.codec, self._atomic)
            pids = [pid for pid, _ in self._current().entries(tenant)]
            for doc in self.store.retrieve(tenant, pids, with_vectors=self.store.has_vectors()).values():
                if doc.docid:
                    state.add(doc.docid, doc.vector)
            self._states[tenant] = state
        return state

    def _resync(self, tenant: str) -> None:
        """After a failed write: forget what we believed about the tenant and re-read it from Qdrant."""
        self._states.pop(tenant, None)
        try:
            truth = self.store.docids_of_tenant(tenant)
        except Exception:  # Qdrant unreachable: keep the old snapshot; a restart re-reads everything
            log.exception("could not re-read tenant '%s' after a failed write", tenant)
            return
        ns = self._current()
        added = [(tenant, pid, docid) for pid, docid in truth]
        self._publish(ns.apply(self.codec, added, {tenant: [p for p, _ in ns.entries(tenant)]}))

    # --- changes -------------------------------------------------------------------------------
    def upsert(self, tenant: str, docs: Sequence[NewDocument]) -> list[Upserted]:
        self._check_tenant(tenant)
        self._check_docs(docs)
        with self._lock:
            pids = [point_id_for(tenant, d.doc_id) for d in docs]
            existing = self.store.retrieve(tenant, pids)
            texts = [f"{d.title}. {d.text}" for d in docs]
            vectors = self._embed(texts)
            state = self._state(tenant)
            docids: list[str] = []
            created: list[bool] = []
            for d, pid, vec in zip(docs, pids, vectors, strict=True):
                old = existing.get(pid)
                if old is not None and old.docid:
                    docids.append(old.docid)  # an update keeps its docid
                    created.append(False)
                    continue
                docid = docid_for(self.codec, state, d.doc_id, vec, d.title, d.text)
                state.add(docid, vec)
                docids.append(docid)
                created.append(old is None)
            try:
                self.store.upsert_documents(tenant, [(d.doc_id, d.title, d.text) for d in docs],
                                            vectors if self.store.has_vectors() else None, docids=docids)
            except Exception:
                self._resync(tenant)
                raise
            ns = self._current()
            have = set(ns.point_ids) if existing else set()
            fresh = [i for i, pid in enumerate(pids) if pid not in have]
            if self._seed is not None and fresh:
                self._seed([docids[i] for i in fresh], vectors[fresh])
            added = [(tenant, pids[i], docids[i]) for i in fresh]
            self._publish(ns.apply(self.codec, added, {}))
            return [Upserted(d.doc_id, pid, docid, c) for d, pid, docid, c in zip(docs, pids, docids, created, strict=True)]

    def delete(self, tenant: str, doc_ids: Sequence[str]) -> Deleted:
        self._check_tenant(tenant)
        self._check_ids(doc_ids, "ids")
        with self._lock:
            pids = [point_id_for(tenant, d) for d in doc_ids]
            existing = self.store.retrieve(tenant, pids, with_vectors=self.store.has_vectors())
            gone = [pid for pid in pids if pid in existing]
            try:
                self.store.delete_points(tenant, gone)
            except Exception:
                self._resync(tenant)
                raise
            state = self._states.get(tenant)
            if state is not None:
                for pid in gone:
                    doc = existing[pid]
                    if doc.docid:
                        state.remove(doc.docid, doc.vector)
            self._publish(self._current().apply(self.codec, [], {tenant: gone}))
            return Deleted([d for d, p in zip(doc_ids, pids, strict=True) if p in existing],
                           [d for d, p in zip(doc_ids, pids, strict=True) if p not in existing])

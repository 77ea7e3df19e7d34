"""Live document changes: upserts and deletes, Qdrant first, then the tenant's trie.

Qdrant is the system of record, so every change is written there first (points carry their docid in the
payload) and only then published as a new namespace snapshot. If the Qdrant call fails nothing is
published; if it may have been applied in part, the tenant's namespace is re-read from Qdrant, so the
sidecar never disagrees with Qdrant and never hands out a docid twice. A process killed at any point
restarts from Qdrant in the same way.

Writes of one tenant run one at a time; writes of different tenants run side by side and meet only to
publish (one short step that swaps in the new snapshot) and, on an atomic index, in the shared pool of
docid numbers. A tenant holds at most ``tenant_max_new_docids`` docids the model was not trained on.
Searches never wait for writes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from genret.config import Config
from genret.data.index_dir import TrainedDocids
from genret.docids import AtomicCodec, DocidCodec, SemanticCodec
from genret.docids.placement import TenantDocids, docid_for
from genret.errors import InvalidArgument, ResourceExhausted
from genret.metrics import TENANTS, WRITES
from genret.names import check_doc_id
from genret.serving.allocation import AtomicPool
from genret.serving.memory import return_freed_memory
from genret.serving.namespaces import Namespaces
from genret.store import QdrantStore, point_id_for, text_hash
from genret.turns import Lane, Lanes
from genret.types import Deleted, NewDocument, PointId, Synced, Upserted

log = logging.getLogger(__name__)
_TRIM_AFTER_CHARS = 1_000_000  # writes this large hand their freed memory back to the system


Embed = Callable[[str, Sequence[str]], np.ndarray]  # (tenant, texts) -> their vectors
Seed = Callable[[Sequence[str], np.ndarray], None]  # (new docids, their document vectors)
# (tenant, the points written with their title and text, or None when not known, the points removed)
TextsChanged = Callable[[str, Sequence[tuple[PointId, str]] | None, Sequence[PointId]], None]


@dataclass(frozen=True)
class Snapshots:
    """How the writer reads and replaces the engine's namespaces: ``current`` snapshot, ``publish`` a new one
    (returns its epoch) and the ``oldest`` epoch a search in flight may still read."""

    current: Callable[[], Namespaces]
    publish: Callable[[Namespaces, str], int]  # (new snapshot, the tenant it changed) -> its epoch
    oldest: Callable[[], int]


class DocumentWriter:
    def __init__(self, config: Config, store: QdrantStore, codec: DocidCodec, embed: Embed, snapshots: Snapshots,
                 trained: TrainedDocids, texts: TextsChanged, seed: Seed | None = None) -> None:
        """``texts`` is told, in the tenant's lane after each publish, what the change did to the tenant's
        texts. ``seed`` (atomic indexes) is called with each new docid and its vector after Qdrant holds them
        and before they are published: it gives the docid's model row to its new document."""
        self.config = config
        self.store = store
        self.codec = codec
        self._embed = embed
        self._seed = seed
        self._texts = texts
        self._snap = snapshots
        self._trained = trained
        self._publish_lock = threading.Lock()
        self._lanes = Lanes(Lane)
        self._states: dict[str, TenantDocids] = {}
        self._stale: set[str] = set()  # tenants whose re-read failed (Qdrant down): re-read when it returns
        self._seen_texts: dict[str, int] | None = None  # tenant -> its digest of text hashes at the last ``follow``
        self._pool = (AtomicPool(codec.size, (int(d) for d in snapshots.current().docids()))
                      if isinstance(codec, AtomicCodec) else None)

    # --- validation ----------------------------------------------------------------------------
    def _check_ids(self, ids: Sequence[str], what: str) -> None:
        cfg = self.config
        if not ids:
            raise InvalidArgument(f"{what} is empty")
        if len(ids) > cfg.max_write_batch:
            raise InvalidArgument(f"{len(ids)} {what}; the limit per call is {cfg.max_write_batch}")
        for i, doc_id in enumerate(ids):
            check_doc_id(doc_id, f"{what}[{i}]: the document id")
        if len(set(ids)) != len(ids):
            raise InvalidArgument(f"{what} repeat a document id")

    def _check_docs(self, docs: Sequence[NewDocument]) -> int:
        """Validate the documents; their total size in characters."""
        self._check_ids([d.doc_id for d in docs], "documents")
        total = 0
        for i, d in enumerate(docs):
            if not d.text.strip() and not d.title.strip():
                raise InvalidArgument(f"documents[{i}] ('{d.doc_id}') has neither title nor text")
            size = d.size
            if size > self.config.max_document_chars:
                raise InvalidArgument(f"documents[{i}] ('{d.doc_id}') has {size} characters; the limit per "
                                      f"document is {self.config.max_document_chars}")
            total += size
        if total > self.config.max_write_chars:
            raise InvalidArgument(f"the documents hold {total} characters; the limit per call is "
                                  f"{self.config.max_write_chars} (send them in several calls)")
        return total

    # --- state ---------------------------------------------------------------------------------
    @contextmanager
    def _lane(self, tenant: str) -> Iterator[None]:
        """One write at a time per tenant; other tenants' writes go on beside it."""
        with self._lanes.hold(tenant):
            if tenant in self._stale:
                self._resync(tenant)
            yield

    def _state(self, tenant: str) -> TenantDocids:
        """The tenant's taken docids with their embeddings, read from Qdrant on first use."""
        state = self._states.get(tenant)
        if state is None:
            state = TenantDocids(self.codec)
            pids = [pid for pid, _ in self._snap.current().entries(tenant)]
            for doc in self.store.retrieve(tenant, pids, with_vectors=self.store.has_vectors()).values():
                if doc.docid:
                    state.add(doc.docid, doc.vector, new=(doc.point_id, doc.docid) not in self._trained)
            self._states[tenant] = state
        return state

    def _publish(self, tenant: str, added: Sequence[tuple[PointId, str]], removed: Sequence[PointId]) -> int:
        """Apply one tenant's change to the current snapshot and publish it; its epoch. The tenant's new
        namespace is built in its lane, outside the publish lock (only this lane changes it), so a big
        tenant's rebuild never holds up another tenant's publish."""
        mine = self._snap.current().changed(self.codec, tenant, added, removed)
        with self._publish_lock:
            return self._snap.publish(self._snap.current().with_tenant(tenant, mine), tenant)

    def _resync(self, tenant: str, reserved: Sequence[str] = ()) -> None:
        """After a failed write: forget what we believed about the tenant and re-read it from Qdrant. Atomic
        numbers ``reserved`` for the write that Qdrant does not hold go back to the pool."""
        self._states.pop(tenant, None)
        self._texts(tenant, None, ())  # what Qdrant now holds of the tenant's texts is not known
        try:
            truth = self.store.docids_of_tenant(tenant)
        except Exception as exc:  # Qdrant unreachable: keep the old snapshot until Qdrant is back
            log.warning("could not re-read tenant '%s' after a failed write (%s); will when Qdrant is back",
                        tenant, exc)
            self._stale.add(tenant)
            return
        self._stale.discard(tenant)
        current = self._snap.current()
        before = {d for _, d in current.entries(tenant)}
        mine = current.replace(self.codec, tenant, truth).get(tenant)  # built outside the publish lock
        with self._publish_lock:
            epoch = self._snap.publish(self._snap.current().with_tenant(tenant, mine), tenant)
        if self._pool is not None:
            held = {d for _, d in truth}
            self._pool.give_back(int(d) for d in reserved if d not in held)
            self._pool.retire((int(d) for d in before - held), epoch)

    def follow(self, truth: dict[str, list[tuple[PointId, str]]], texts: dict[str, int]) -> list[str]:
        """Rebuild, each in its lane, the tenants whose docids in Qdrant (``truth``, one scroll) differ from
        the current snapshot: written by another replica. Of the others, those whose digest of text hashes
        (``texts``, from the same scroll) differs from the last one seen have what was built from their
        texts dropped; on the first call, every tenant's (what was built before may predate a change). The
        tenants rebuilt or dropped, the first call's drops left out."""
        current = self._snap.current()
        changed = sorted(t for t in set(current.tenants) | set(truth)
                         if set(current.entries(t)) != set(truth.get(t, ())))
        for tenant in changed:
            with self._lane(tenant):
                self._resync(tenant)
        seen = self._seen_texts
        rewritten = sorted(t for t in set(texts) | set(seen or ())
                           if (seen is None or texts.get(t) != seen.get(t)) and t not in changed)
        for tenant in rewritten:
            with self._lane(tenant):
                self._texts(tenant, None, ())
        self._seen_texts = texts
        return sorted({*changed, *(rewritten if seen is not None else ())})

    def resync_stale(self) -> None:
        """Re-read every tenant a failed write left unsure of (called when Qdrant answers again)."""
        for tenant in list(self._stale):
            with self._lane(tenant):
                pass

    def _check_quota(self, tenant: str, state: TenantDocids, count: int) -> None:
        quota = self.config.tenant_max_new_docids
        if quota and len(state.new) + count > quota:
            raise ResourceExhausted(
                f"tenant '{tenant}' holds {len(state.new)} docids the model was not trained on and this write "
                f"adds {count}; its quota is {quota}: delete documents, or train them in with `genret index --add`")

    def _reserve(self, state: TenantDocids, docs: Sequence[NewDocument], vectors: np.ndarray) -> list[str]:
        """Docids for documents that have none yet: all of them, or none and an error."""
        if self._pool is not None:
            docids = [str(n) for n in self._pool.take(len(docs), self._snap.oldest())]
        else:
            docids = []
            try:
                for d, vec in zip(docs, vectors, strict=True):
                    docids.append(docid_for(self.codec, state, d.doc_id, vec, d.title, d.text))
                    state.add(docids[-1], vec, new=True)
            except Exception:
                for docid, vec in zip(docids, vectors, strict=False):
                    state.remove(docid, vec)
                raise
            return docids
        for docid, vec in zip(docids, vectors, strict=True):
            state.add(docid, vec, new=True)
        return docids

    # --- changes -------------------------------------------------------------------------------
    def upsert(self, tenant: str, docs: Sequence[NewDocument]) -> list[Upserted]:
        chars = self._check_docs(docs)
        try:
            with self._lane(tenant):
                return self._upsert(tenant, docs)
        finally:
            if chars > _TRIM_AFTER_CHARS:
                return_freed_memory()

    def _upsert(self, tenant: str, docs: Sequence[NewDocument]) -> list[Upserted]:
        pids = [point_id_for(tenant, d.doc_id) for d in docs]
        existing = self.store.retrieve(tenant, pids)
        state = self._state(tenant)
        fresh = [i for i, pid in enumerate(pids) if not (pid in existing and existing[pid].docid)]
        self._check_quota(tenant, state, len(fresh))
        vectors = self._embed(tenant, [f"{d.title}. {d.text}" for d in docs])
        reserved = self._reserve(state, [docs[i] for i in fresh], vectors[fresh])
        docids = [existing[pid].docid or "" if pid in existing else "" for pid in pids]
        for i, docid in zip(fresh, reserved, strict=True):
            docids[i] = docid
        try:
            self.store.upsert_documents(tenant, [(d.doc_id, d.title, d.text) for d in docs],
                                        vectors if self.store.has_vectors() else None, docids=docids,
                                        extras=[(d.payload, d.vectors) for d in docs])
        except Exception as exc:
            self._resync(tenant, reserved if self._pool is not None else ())
            if isinstance(exc, ValueError):  # Qdrant refused them (a vector of the wrong size, say)
                raise InvalidArgument(f"Qdrant refused the documents: {exc}") from exc
            raise
        if self._seed is not None and fresh:
            self._seed(reserved, vectors[fresh])
        self._publish(tenant, [(pids[i], docids[i]) for i in fresh], ())
        self._texts(tenant, [(pid, f"{d.title} {d.text}") for pid, d in zip(pids, docs, strict=True)], ())
        WRITES.labels(TENANTS(tenant), "upsert").inc(len(docs))
        return [Upserted(d.doc_id, pid, docid, pid not in existing)
                for d, pid, docid in zip(docs, pids, docids, strict=True)]

    def sync(self, tenant: str, pids: Sequence[PointId]) -> Synced:
        """Make the tenant's namespace agree with Qdrant about ``pids`` after a write that reached Qdrant
        some other way (the Qdrant-wire front door): a point that left the tenant, was deleted or lost its
        text leaves the namespace; a point of the tenant with text and no docid (new, or its payload
        overwritten) gets one, written to its payload, or its own back if the namespace holds it; a point
        whose docid the namespace already holds is left as it is."""
        if len(pids) > self.config.max_write_batch * 64:
            raise InvalidArgument(f"a write through the front door touches {len(pids)} points; the limit is "
                                  f"{self.config.max_write_batch * 64}")
        with self._lane(tenant):
            current = self._snap.current().get(tenant)
            held: dict[PointId, str] = {}
            if current is not None:
                for pid, (k, r) in current.locate(pids).items():
                    held[pid] = current.parts[k].docids[r]
            now = {pid: doc for pid, doc in self.store.retrieve(tenant, pids).items()
                   if doc.title.strip() or doc.text.strip()}
            restore = [pid for pid in held if pid in now and not now[pid].docid]  # payload overwritten
            fresh = [pid for pid in dict.fromkeys(pids)
                     if pid in now and pid not in restore and (not now[pid].docid or now[pid].docid != held.get(pid))]
            removed = [pid for pid in held if pid not in now or pid in fresh]
            state = self._state(tenant)
            for pid in removed:
                state.remove(held[pid], None)
            self._check_quota(tenant, state, len(fresh))
            docs = [NewDocument(now[pid].doc_id, now[pid].title, now[pid].text) for pid in fresh]
            vectors = self._embed(tenant, [f"{d.title}. {d.text}" for d in docs]) if docs else np.zeros((0, 0))
            reserved = self._reserve(state, docs, vectors) if docs else []
            touched = list(dict.fromkeys(pids))
            rehash = [(p, h) for p in touched if p in now
                      for h in [text_hash(now[p].title, now[p].text)] if now[p].text_hash != h]
            try:
                # a text that changed (or came without genret) gets its hash, so read replicas learn of it
                self.store.write_docids(tenant, [*zip(fresh, reserved, strict=True), *((p, held[p]) for p in restore)],
                                        rehash)
            except Exception:
                self._resync(tenant, reserved if self._pool is not None else ())
                raise
            if self._seed is not None and fresh:
                self._seed(reserved, vectors)
            epoch = self._publish(tenant, list(zip(fresh, reserved, strict=True)), removed)
            self._texts(tenant, [(p, f"{now[p].title} {now[p].text}") for p in touched if p in now],
                        [p for p in touched if p not in now])
            if self._pool is not None:
                self._pool.retire((int(held[pid]) for pid in removed), epoch)
            if removed and isinstance(self.codec, SemanticCodec):
                self._states.pop(tenant, None)  # centroids are re-read on the next write
            WRITES.labels(TENANTS(tenant), "sync").inc(len(pids))
            return Synced(len(fresh), len(removed))

    def delete(self, tenant: str, doc_ids: Sequence[str]) -> Deleted:
        self._check_ids(doc_ids, "ids")
        with self._lane(tenant):
            pids = [point_id_for(tenant, d) for d in doc_ids]
            existing = self.store.retrieve(tenant, pids, with_vectors=self.store.has_vectors())
            gone = [pid for pid in pids if pid in existing]
            try:
                self.store.delete_points(tenant, gone)
            except Exception:
                self._resync(tenant)
                raise
            epoch = self._publish(tenant, (), gone)
            self._texts(tenant, [], gone)
            freed = [existing[pid] for pid in gone if existing[pid].docid]
            state = self._states.get(tenant)
            if state is not None:
                for doc in freed:
                    state.remove(doc.docid or "", doc.vector)
            if self._pool is not None:
                self._pool.retire((int(doc.docid or 0) for doc in freed), epoch)
            WRITES.labels(TENANTS(tenant), "delete").inc(len(gone))
            return Deleted([d for d, p in zip(doc_ids, pids, strict=True) if p in existing],
                           [d for d, p in zip(doc_ids, pids, strict=True) if p not in existing])

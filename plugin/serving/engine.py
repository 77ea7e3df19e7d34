"""The search engine: domain requests in, ranked hits out. No gRPC types here.

validate -> encode queries -> constrained beam search from each query's tenant root -> leaves to point
ids -> hydrate from Qdrant under the tenant filter -> threshold -> hits.
"""

from __future__ import annotations

import atexit
import dataclasses
import gc
import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from genret import tracing
from genret.config import Config
from genret.data.index_dir import MODEL_DIR, Manifest, TrainedDocids, read_manifest, trained_docids
from genret.decoding.beam import constrained_beam_search, score_docids
from genret.decoding.model import EncodedQueries, HFSeq2SeqBackend, Seq2SeqBackend, load_trained
from genret.devices import resolve_device
from genret.docids import AtomicCodec, DocidCodec
from genret.errors import FailedPrecondition, GenretError, InvalidArgument, NotFound
from genret.kernels import BACKENDS, SCORING
from genret.metrics import BATCH_ROWS, NAMESPACE_DOCS, OTHER, PUBLISHES, SEARCH_SECONDS, TENANTS
from genret.names import check_tenant
from genret.ranking.calibration import DENSE, GENERATIVE, LEXICAL, Calibration, read_calibration
from genret.ranking.modes import LIST_FUSIONS, Answer, Scorer, answer, resolved
from genret.serving.feedback import FEEDBACK_TOKENS, feedback_text, rescored
from genret.serving.filtered import FilteredTries
from genret.serving.lexical import LexicalIndexes
from genret.serving.namespaces import Namespace, Namespaces, load_namespaces
from genret.serving.served import ServedTrie, packed, served_trie
from genret.serving.writer import DocumentWriter, Snapshots
from genret.store import QdrantStore, parse_filter
from genret.turns import TenantTurns
from genret.types import (
    Checkpoint,
    Deleted,
    Fusion,
    IndexStats,
    Mode,
    NamespaceStats,
    NewDocument,
    SearchHit,
    SearchQuery,
    Synced,
    Upserted,
)

log = logging.getLogger(__name__)


def _freeze_for_life() -> None:
    """Move what is alive now out of the collector's reach: the model and namespaces live as long as the
    process, so the collector need not rescan them. At exit they are handed back, so the interpreter's last
    collections still free them (frozen cycles would outlive the extension modules they hold objects of)."""
    gc.freeze()
    atexit.unregister(gc.unfreeze)  # one hand-back, however many engines were loaded
    atexit.register(gc.unfreeze)


def _rows_by_tenant(queries: Sequence[SearchQuery], rows: Iterable[int]) -> dict[str, list[int]]:
    """The rows, grouped by their query's tenant: each tenant's Qdrant reads are its own calls."""
    out: dict[str, list[int]] = {}
    for i in rows:
        out.setdefault(queries[i].tenant, []).append(i)
    return out


def _none_of(point_ids: Sequence[str]) -> dict[str, Any]:
    """No point: a filter that matches none of the tenant's documents."""
    return {}


@dataclass(frozen=True)
class _Live:
    """One published snapshot, as searches read it: the namespaces and each tenant's trie on the device."""

    namespaces: Namespaces
    tries: Mapping[str, ServedTrie]
    epoch: int
    changed_at: Mapping[str, int]  # tenant -> the epoch in which its documents last changed


class Engine:
    def __init__(self, config: Config, store: QdrantStore, backend: Seq2SeqBackend, codec: DocidCodec,
                 namespaces: Namespaces, manifest: Manifest) -> None:
        if config.kernel_backend not in BACKENDS:
            raise ValueError(f"kernel_backend must be one of {', '.join(BACKENDS)}, got {config.kernel_backend!r}")
        if config.scoring not in SCORING:
            raise ValueError(f"scoring must be one of {', '.join(SCORING)}, got {config.scoring!r}")
        self.config = config
        self.store = store
        self.backend = backend
        self.codec = codec
        self.manifest = manifest
        self._pins: Counter[int] = Counter()  # epoch -> searches reading that snapshot
        self._pin_lock = threading.Lock()
        self._live = self._snapshot(namespaces, _Live(namespaces, {}, 0, {}), namespaces.tenants, 0)  # replaced whole
        self.calibration: Calibration | None = read_calibration(config.index_dir)
        fitted = float(self.calibration.fit_on.get("generative_feedback", 0.0)) if self.calibration else None
        if fitted is not None and fitted != config.generative_feedback:
            log.warning("the index's calibration was fitted with generative feedback %g and the server serves %g: "
                        "generative probabilities and AUTO are off until `genret calibrate` runs with the server's "
                        "setting", fitted, config.generative_feedback)
        self._dense_encoder: Any = None
        self._dense_lock = threading.Lock()
        self._embed_turns = TenantTurns()
        self._seeded = manifest.training.get("options", {}).get("docid_init") == "embeddings"
        atomic = isinstance(codec, AtomicCodec)
        self._filtered = FilteredTries(store, lambda: self.backend.device, atomic)
        self._lexical = LexicalIndexes(store, config.lexical_tenant_max_docs, config.lexical_idle_s,
                                       processes=config.lexical_build_processes)
        trained = trained_docids(config.index_dir)
        self.writer = DocumentWriter(config, store, codec, self.embed_documents,
                                     Snapshots(lambda: self._live.namespaces, self._publish, self.oldest_epoch),
                                     trained, self._lexical.changed, self._seed_rows if atomic else None)
        if atomic:
            self._seed_untrained(trained)

    def _seed_rows(self, docids: Sequence[str], vectors: np.ndarray) -> None:
        """Give atomic docids to new documents: their model rows start at the documents' vectors on an
        embedding-seeded index and at zero (no preference) otherwise, never at a former document's row."""
        rows = vectors if self._seeded else np.zeros((len(docids), self.backend.head.weight.shape[1]), np.float32)
        self.backend.seed_rows([self.codec.encode(d)[0] for d in docids], rows)

    def _seed_untrained(self, trained: TrainedDocids) -> None:
        """Documents given an atomic docid since the index was trained have their rows only in the process
        that wrote them: after a restart, set them again (from the vectors in Qdrant)."""
        ns = self._live.namespaces
        for tenant in ns.tenants:
            pids = [pid for pid, docid in ns.entries(tenant) if (pid, docid) not in trained]
            found = self.store.retrieve(tenant, pids, self._seeded and self.store.has_vectors()) if pids else {}
            docs = [d for d in found.values() if d.docid]
            if not docs:
                continue
            if not self._seeded:  # their rows start at zero: no vectors needed
                vectors = np.zeros((len(docs), 0), np.float32)
            elif all(d.vector is not None for d in docs):
                vectors = np.stack([d.vector for d in docs if d.vector is not None])
            else:  # a collection without dense vectors: embed them as an upsert does
                vectors = self.embed_documents(tenant, [f"{d.title}. {d.text}" for d in docs])
            self._seed_rows([d.docid or "" for d in docs], vectors)

    def _snapshot(self, namespaces: Namespaces, before: _Live, changed: Iterable[str], epoch: int) -> _Live:
        """``namespaces`` with the device tries of ``before``, remade for the ``changed`` tenants only."""
        out, at = dict(before.tries), dict(before.changed_at)
        for tenant in changed:
            ns = namespaces.get(tenant)
            if ns is None:
                out.pop(tenant, None)
                at.pop(tenant, None)
            else:
                out[tenant] = served_trie(ns, self.backend.device, isinstance(self.codec, AtomicCodec))
                at[tenant] = epoch
        return _Live(namespaces, out, epoch, at)

    def _publish(self, namespaces: Namespaces, tenant: str) -> int:
        """Swap in a new snapshot in which ``tenant`` changed: one reference assignment, so readers see the
        old one or the new one."""
        live = self._live
        self._live = self._snapshot(namespaces, live, (tenant,), live.epoch + 1)
        PUBLISHES.inc()
        label = TENANTS(tenant)
        if label != OTHER:
            NAMESPACE_DOCS.labels(label).set(namespaces.counts.get(tenant, 0))
        return self._live.epoch

    @contextmanager
    def _pinned(self) -> Iterator[_Live]:
        """The current snapshot, counted as read until the block ends (see ``oldest_epoch``)."""
        with self._pin_lock:
            live = self._live
            self._pins[live.epoch] += 1
        try:
            yield live
        finally:
            with self._pin_lock:
                self._pins[live.epoch] -= 1
                if not self._pins[live.epoch]:
                    del self._pins[live.epoch]

    def oldest_epoch(self) -> int:
        """The oldest snapshot a search may still read: docids removed before it are in no snapshot read."""
        with self._pin_lock:
            return min(self._pins, default=self._live.epoch)

    @classmethod
    def load(cls, config: Config, store: QdrantStore) -> Engine:
        manifest = read_manifest(config.index_dir)
        if manifest.collection != store.collection:
            raise ValueError(f"index {config.index_dir} was built for collection '{manifest.collection}', "
                             f"not '{store.collection}'")
        if manifest.docid_key != store.docid_key:
            raise ValueError(f"index {config.index_dir} keeps its docids in payload field '{manifest.docid_key}', "
                             f"not '{store.docid_key}': serve it with --docid-key {manifest.docid_key}")
        if manifest.tenant_key != config.tenant_key:
            raise ValueError(f"index {config.index_dir} uses tenant field '{manifest.tenant_key}', "
                             f"not '{config.tenant_key}'")
        spec = manifest.model_spec
        model, tokenizer = load_trained(f"{config.index_dir}/{MODEL_DIR}")
        backend = HFSeq2SeqBackend(model, tokenizer, spec, resolve_device(config.device))
        codec = manifest.docid_codec()
        engine = cls(config, store, backend, codec, load_namespaces(store, codec), manifest)
        _freeze_for_life()
        return engine

    @property
    def collection(self) -> str:
        return self.store.collection

    @property
    def namespaces(self) -> Namespaces:
        return self._live.namespaces

    @property
    def on_accelerator(self) -> bool:
        """Whether the model runs on a GPU (where large batches cost little more than small ones)."""
        return self.backend.device.type != "cpu"

    def ping(self) -> bool:
        """Whether Qdrant answers; when it does again, tenants a failed write left unsure of are re-read."""
        if not self.store.ping():
            return False
        self.writer.resync_stale()
        return True

    def follow(self) -> list[str]:
        """Catch up with the writes other replicas made to Qdrant; the tenants rebuilt."""
        return self.writer.follow(*self.store.docids_and_texts_by_tenant())

    # --- writes --------------------------------------------------------------------------------
    def upsert(self, tenant: str, docs: Sequence[NewDocument], index: str = "") -> list[Upserted]:
        self._check_request(tenant, index)
        return self.writer.upsert(tenant, docs)

    def delete(self, tenant: str, doc_ids: Sequence[str], index: str = "") -> Deleted:
        self._check_request(tenant, index)
        return self.writer.delete(tenant, doc_ids)

    def sync(self, tenant: str, point_ids: Sequence[str]) -> Synced:
        """After a write that reached Qdrant through the front door: the tenant's namespace follows it."""
        check_tenant(tenant)
        return self.writer.sync(tenant, point_ids)

    def _check_request(self, tenant: str, index: str) -> None:
        """Every request names a valid tenant and, if it names an index, the one served here."""
        check_tenant(tenant)
        self._check_index(index)

    def _check_index(self, index: str) -> None:
        if index and index != self.store.collection:
            raise NotFound(f"index '{index}' is not served here (serving '{self.store.collection}')")

    # --- validation ----------------------------------------------------------------------------
    def _normalise(self, q: SearchQuery) -> SearchQuery:
        """Check a query against the limits and fill defaults; raises InvalidArgument / NotFound."""
        cfg = self.config
        self._check_request(q.tenant, q.index)
        if not q.text.strip():
            raise InvalidArgument("query is empty")
        if len(q.text) > cfg.max_query_chars:
            raise InvalidArgument(f"query has {len(q.text)} characters; the limit is {cfg.max_query_chars}")
        top_k = q.top_k or cfg.default_top_k
        if not 1 <= top_k <= cfg.max_top_k:
            raise InvalidArgument(f"top_k must be in 1..{cfg.max_top_k}, got {q.top_k}")
        beams = q.beams or max(top_k, cfg.default_beam)
        if not 1 <= beams <= cfg.max_beam:
            raise InvalidArgument(f"beam_size must be in 1..{cfg.max_beam}, got {q.beams}")
        if beams < top_k:
            raise InvalidArgument(f"beam_size ({beams}) must be at least top_k ({top_k})")
        if q.score_threshold is not None and not math.isfinite(q.score_threshold):
            raise InvalidArgument("score_threshold must be a finite number")
        if q.min_probability is not None:
            if not 0.0 <= q.min_probability <= 1.0:
                raise InvalidArgument("min_probability must be in [0, 1]")
            if self.calibration is None:
                raise FailedPrecondition("min_probability needs a calibrated index (run `genret calibrate`)")
        if q.mode != Mode.GENERATIVE and not self.store.has_vectors():
            raise FailedPrecondition(f"collection '{self.store.collection}' has no dense vectors; "
                                     f"load it with vectors to use {q.mode.name}")
        if (q.mode in (Mode.HYBRID, Mode.AUTO) and q.fusion in (Fusion.WEIGHTED, Fusion.LEARNED)
                and self.calibration is None):
            raise FailedPrecondition(f"{q.fusion.name} fusion needs a calibrated index (run `genret calibrate`)")
        if not self.namespaces.has(q.tenant):
            raise NotFound(f"tenant '{q.tenant}' has no documents in index '{self.store.collection}'")
        if q.filter is not None:
            parse_filter(q.filter)  # INVALID_ARGUMENT with the reason, before any work
        feedback = cfg.generative_feedback if q.feedback is None else q.feedback
        if not (math.isfinite(feedback) and feedback >= 0):
            raise InvalidArgument(f"feedback must be a finite number of at least 0, got {q.feedback}")
        return dataclasses.replace(q, top_k=top_k, beams=beams, feedback=feedback)

    def _view(self, q: SearchQuery, live: _Live) -> tuple[Namespace | None, ServedTrie | None]:
        """The namespace and trie a query decodes in: its tenant's, cut down to its filter's points."""
        ns = live.namespaces.get(q.tenant)
        if ns is None or q.filter is None:
            return ns, live.tries.get(q.tenant)
        cut = self._filtered.get(ns, q.filter, live.changed_at[q.tenant])  # another tenant's writes keep it
        return cut.ns, cut.served

    # --- search --------------------------------------------------------------------------------
    def search(self, queries: Sequence[SearchQuery], deadline: float | None = None,
               checkpoint: Checkpoint | None = None) -> list[list[SearchHit]]:
        """Answer queries, which may mix tenants and modes: each is checked against the limits and given
        the server's defaults (InvalidArgument / NotFound / FailedPrecondition name the query), then
        generative lists are decoded together (grouped by beam width), dense lists come from Qdrant, each
        query's mode combines them, and hits are filled in from Qdrant under the query's tenant filter.
        ``checkpoint`` is called between decoding steps (where the scheduler may run another batch)."""
        checked = []
        with tracing.span("validate", queries=len(queries)):
            for i, q in enumerate(queries):
                try:
                    checked.append(self._normalise(q))
                except GenretError as exc:
                    raise type(exc)(f"queries[{i}]: {exc}" if len(queries) > 1 else str(exc)) from exc
        self.store.check_available()  # every answer needs Qdrant: fail before decoding when it is down
        t0 = time.perf_counter()
        with self._pinned() as live:  # one snapshot for the whole batch
            out = self._search(checked, live, deadline, checkpoint)
        took = time.perf_counter() - t0
        BATCH_ROWS.observe(len(checked))
        for q in checked:
            SEARCH_SECONDS.labels(q.mode.name.lower(), q.fusion.name.lower()).observe(took)
        return out

    def _search(self, queries: Sequence[SearchQuery], live: _Live, deadline: float | None,
                checkpoint: Checkpoint | None) -> list[list[SearchHit]]:
        gen, encoded = self._generative_lists(queries, live, deadline, checkpoint)
        gen = self._with_feedback(queries, gen, live, deadline, checkpoint)
        dense, vectors = self._dense_lists(queries)
        lexical = self._lexical_lists(queries, live)
        docid_of: dict[str, str] = {}
        for lst in gen.values():
            docid_of.update({pid: docid for pid, docid, _ in lst})
        answers: dict[int, list[Answer]] = {}
        for i, q in enumerate(queries):
            lists = {GENERATIVE: [(pid, s) for pid, _, s in gen.get(i, [])], DENSE: dense.get(i, [])}
            if i in lexical:
                lists[LEXICAL] = lexical[i]
            scorers = self.scorers(q, vectors.get(i), live, deadline, encoded.get(i), checkpoint)
            with tracing.span("fusion", mode=q.mode.name.lower(), fusion=q.fusion.name.lower()):
                answers[i] = [a for a in answer(q.mode, q.fusion, lists, self.calibration, scorers) if self._keep(q, a)]
            answers[i] = answers[i][: q.top_k]
        return self._hydrate(queries, answers, docid_of)

    def scorers(self, q: SearchQuery, vector: Any, live: _Live | None = None, deadline: float | None = None,
                enc: EncodedQueries | None = None, checkpoint: Checkpoint | None = None) -> dict[str, Scorer]:
        """Each retriever's scorer of given points for query ``q`` (``vector``: its dense embedding):
        Qdrant's cosine under the tenant filter, and the model's log-probability of each point's docid
        decoded from the tenant's root, as beam search would score it (``enc``: the query already encoded)."""
        snap = live or self._live
        return {DENSE: lambda ids: self._dense_scores(q, vector, ids),
                GENERATIVE: lambda ids: self._generative_scores(q, ids, snap, deadline, enc, checkpoint)}

    def _keep(self, q: SearchQuery, a: Answer) -> bool:
        if q.score_threshold is not None and a.score < q.score_threshold:
            return False
        return q.min_probability is None or (a.probability is not None and a.probability >= q.min_probability)

    def _generative_lists(self, queries: Sequence[SearchQuery], live: _Live, deadline: float | None,
                          checkpoint: Checkpoint | None = None
                          ) -> tuple[dict[int, list[tuple[str, str, float]]], dict[int, EncodedQueries]]:
        """Each decoded query's candidates, and its encoder output (reused to score other candidates)."""
        views = {i: self._view(q, live) for i, q in enumerate(queries) if q.mode != Mode.DENSE}
        groups: dict[int, list[int]] = {}
        for i, (_, trie) in views.items():
            if trie is not None:  # a tenant emptied meanwhile, or no point matching the filter: no hits
                groups.setdefault(queries[i].beams, []).append(i)
        out: dict[int, list[tuple[str, str, float]]] = {}
        encoded: dict[int, EncodedQueries] = {}
        for beams, idx in groups.items():
            if checkpoint is not None:
                checkpoint()
            with tracing.span("encode", rows=len(idx)):
                enc = self.backend.encode([queries[i].text for i in idx])
            encoded.update({i: EncodedQueries(enc.hidden[row : row + 1], enc.mask[row : row + 1])
                            for row, i in enumerate(idx)})
            served = [t for i in idx if (t := views[i][1]) is not None]  # every one has a trie (grouped so)
            width = max(beams, *(len(s.trie.roots) for s in served))  # a beam per part's root at least
            tries, unpack = packed(served, self.backend.device)
            with tracing.span("decode", rows=len(idx), beams=width):
                res = constrained_beam_search(self.backend, enc, tries, width, deadline, self.config.kernel_backend,
                                              self.config.scoring, checkpoint)
            leaves, scores = unpack(res.leaves[:, :beams].cpu().numpy()), res.scores[:, :beams].cpu().tolist()
            for row, i in enumerate(idx):
                tenant_ns = views[i][0]
                assert tenant_ns is not None  # a view with a trie has its namespace
                out[i] = self._candidates(tenant_ns, served[row], leaves[row], scores[row])
        return out, encoded

    def _with_feedback(self, queries: Sequence[SearchQuery], gen: dict[int, list[tuple[str, str, float]]],
                       live: _Live, deadline: float | None, checkpoint: Checkpoint | None
                       ) -> dict[int, list[tuple[str, str, float]]]:
        """The generative lists of the queries that ask for feedback, their candidates reordered by their
        scores for the query followed by its top document (``genret.serving.feedback``); one tenant-checked
        Qdrant read per tenant, then one query at a time, each after a checkpoint: another tenant's search
        waits for one query's encoder pass, never the batch's."""
        rows = [i for i, q in enumerate(queries) if q.feedback and gen.get(i)]
        if not rows:
            return gen
        out = dict(gen)
        with tracing.span("feedback", rows=len(rows)):
            texts: dict[int, str] = {}
            for tenant, mine in _rows_by_tenant(queries, rows).items():
                tops = self.store.retrieve(tenant, list(dict.fromkeys(gen[i][0][0] for i in mine)))
                texts.update({i: feedback_text(queries[i].text, tops[gen[i][0][0]])
                              for i in mine if gen[i][0][0] in tops})  # a top gone meanwhile: no feedback
            for i, text in texts.items():
                if checkpoint is not None:
                    checkpoint()
                q = queries[i]
                one = self.backend.encode([text], FEEDBACK_TOKENS)
                again = self._generative_scores(q, [pid for pid, _, _ in gen[i]], live, deadline, one, checkpoint)
                out[i] = rescored(gen[i], again, float(q.feedback or 0.0))
        return out

    def _dense_lists(self, queries: Sequence[SearchQuery]) -> tuple[dict[int, list[tuple[str, float]]], dict[int, Any]]:
        """Each non-generative query's dense list (as deep as its beam when fused) and query vector."""
        idx = [i for i, q in enumerate(queries) if q.mode != Mode.GENERATIVE]
        if not idx:
            return {}, {}
        with tracing.span("encode", rows=len(idx), model="dense"):
            vectors = dict(zip(idx, self.embed_queries([queries[i].text for i in idx]), strict=True))
        out = {}
        for i in idx:
            q = queries[i]
            depth = q.top_k if q.mode == Mode.DENSE else max(q.top_k, q.beams)
            hits = self.store.dense_search(q.tenant, vectors[i], depth, False, flt=self._filter(q))
            out[i] = [(h.point_id, h.score) for h in hits]
        return out, vectors

    def _lexical_lists(self, queries: Sequence[SearchQuery], live: _Live) -> dict[int, list[tuple[str, float]]]:
        """Each fused query's BM25 list over its tenant's own documents (cut to its filter's points), as
        deep as its dense list; none when the server or the query turns the lexical list off."""
        out = {}
        for i, q in enumerate(queries):
            if self._reads_lexical(q, live):
                ns = self._view(q, live)[0] if q.filter is not None else None
                within = None if q.filter is None else ns.locate if ns is not None else _none_of
                with tracing.span("lexical", filtered=q.filter is not None):
                    out[i] = self._lexical.search(q.tenant, q.text, max(q.top_k, q.beams), within)
        return out

    def _reads_lexical(self, q: SearchQuery, live: _Live) -> bool:
        """Whether the query fuses the lexical list: HYBRID or AUTO under DBSF or RRF (only they read it),
        on a tenant that has documents, unless the server or the query turns it off."""
        reads = resolved(q.fusion) in LIST_FUSIONS
        return (self.config.hybrid_lexical and q.lexical and reads and q.mode in (Mode.HYBRID, Mode.AUTO)
                and live.namespaces.get(q.tenant) is not None)

    def prepared(self, q: SearchQuery) -> bool:
        """Whether ``prepare`` has nothing to do for the query."""
        return not self._reads_lexical(q, self._live) or self._lexical.ready(q.tenant)

    def prepare(self, q: SearchQuery) -> None:
        """Work a search needs that is the tenant's alone, done before it joins a batch (in the caller's
        thread): building the tenant's lexical index, so no other tenant's search in the batch waits for it."""
        if self._reads_lexical(q, self._live):
            with tracing.span("lexical.prepare"):
                self._lexical.prepare(q.tenant)

    def searching(self, tenant: str) -> AbstractContextManager[None]:
        """One search of the tenant in flight (see ``LexicalIndexes.using``)."""
        return self._lexical.using(tenant)

    @staticmethod
    def _filter(q: SearchQuery) -> Any:
        return parse_filter(q.filter) if q.filter is not None else None

    def _dense_scores(self, q: SearchQuery, vec: Any, ids: Sequence[str]) -> dict[str, float]:
        hits = self.store.dense_search(q.tenant, vec, len(ids), False, only=ids, flt=self._filter(q)) if ids else []
        return {h.point_id: h.score for h in hits}

    def _generative_scores(self, q: SearchQuery, ids: Sequence[str], live: _Live, deadline: float | None,
                           enc: EncodedQueries | None, checkpoint: Checkpoint | None = None) -> dict[str, float]:
        ns, served = self._view(q, live)
        where = ns.locate(ids) if ns is not None else {}  # only the tenant's own (matching) docids are scored
        if ns is None or served is None or not where:
            return {}
        tokens = np.stack([ns.parts[k].tokens[r] for k, r in where.values()]).astype(np.int64)
        roots = torch.tensor([k for k, _ in where.values()], dtype=torch.long)  # part k's root is node k
        enc = enc if enc is not None else self.backend.encode([q.text])
        scores = score_docids(self.backend, enc, served.trie, torch.from_numpy(tokens).unsqueeze(0),
                              self.config.scoring, deadline, checkpoint, self.config.kernel_backend, roots)[0].tolist()
        return {pid: s for pid, s in zip(where, scores, strict=True) if math.isfinite(s)}

    def _hydrate(self, queries: Sequence[SearchQuery], answers: dict[int, list[Answer]],
                 docid_of: dict[str, str]) -> list[list[SearchHit]]:
        """One tenant-checked Qdrant read per tenant in the batch; hits whose point is gone are dropped."""
        results: list[list[SearchHit]] = [[] for _ in queries]
        for tenant, rows in _rows_by_tenant(queries, answers).items():
            ids = list(dict.fromkeys(a.point_id for i in rows for a in answers[i]))
            payloads = self.store.hydrate(tenant, ids, True)
            key = self.store.docid_key
            for i in rows:
                keep = queries[i].with_payload
                results[i] = [
                    SearchHit(a.point_id, docid_of.get(a.point_id) or str(payloads[a.point_id].get(key) or ""),
                              a.score, a.retriever, payloads[a.point_id] if keep else {}, tuple(a.sources.values()),
                              tuple(a.sources), a.probability)
                    for a in answers[i] if a.point_id in payloads]
        return results

    @staticmethod
    def _candidates(ns: Namespace, served: ServedTrie, leaves: np.ndarray,
                    scores: list[float]) -> list[tuple[str, str, float]]:
        """(point id, docid, score) of a query's decoded leaves in its tenant's own trie, best first."""
        found = [(int(leaf), score) for leaf, score in zip(leaves.tolist(), scores, strict=True)
                 if leaf >= 0 and math.isfinite(score)]
        if not found:
            return []
        parts, nodes = served.locate(np.asarray([leaf for leaf, _ in found], dtype=np.int64))
        ranks = np.empty(len(nodes), dtype=np.int64)
        for k in np.unique(parts).tolist():
            here = parts == k
            ranks[here] = ns.parts[k].forest.leaf_rank(nodes[here])
        out = []
        for k, r, (_, score) in zip(parts.tolist(), ranks.tolist(), found, strict=True):
            part = ns.parts[k]
            out.append((part.point_ids[r], part.docids[r], score))
        return out

    def embed_documents(self, tenant: str, texts: Sequence[str]) -> np.ndarray:
        """MiniLM vectors of a tenant's documents, one document per turn with the tenants writing in turn:
        one tenant's large write delays another's by one document's embedding at most."""
        parts = [self._embed_turns.run(tenant, lambda t=t: self.embed_queries([t])) for t in texts]
        return np.asarray(np.concatenate(parts), dtype=np.float32) if parts else np.zeros((0, 0), np.float32)

    def embed_queries(self, texts: Sequence[str]) -> Any:
        with self._dense_lock:
            if self._dense_encoder is None:
                from genret.data.embed import TextEncoder

                self._dense_encoder = TextEncoder(device=self.backend.device)
        return self._dense_encoder.encode(list(texts))

    # --- info ----------------------------------------------------------------------------------
    def info(self, tenant: str = "") -> IndexStats:
        ns = self.namespaces
        if tenant and not ns.has(tenant):
            raise NotFound(f"tenant '{tenant}' has no documents in index '{self.store.collection}'")
        names = [tenant] if tenant else list(ns.tenants)
        by = ns.by_tenant
        m = self.manifest
        return IndexStats(self.store.collection, self.codec.name, self.codec.vocab_size, self.codec.max_length,
                          str(m.model.get("base", "")), m.created_at, m.versions.get("genret", ""),
                          [NamespaceStats(t, len(by[t]), by[t].num_nodes) for t in names])


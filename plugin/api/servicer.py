"""gRPC servicer: protobuf in, domain objects to the engine, protobuf out. No torch here.

One function, ``status_for``, maps domain errors to gRPC status codes; anything unexpected is logged
with a request id and answered INTERNAL without internals.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
import weakref
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from google.protobuf.json_format import MessageToDict, ParseDict
from google.protobuf.message import DecodeError

from genret import errors, tracing
from genret.api import access_log
from genret.api.auth import OPEN, KeyRing, Principal
from genret.api.batcher import FairBatcher
from genret.api.limits import TenantLimiter
from genret.config import Config
from genret.types import Fusion, IndexStats, Mode, NewDocument, SearchHit, SearchQuery, SearchService
from genret.v1 import genret_pb2 as pb

log = logging.getLogger(__name__)
T = TypeVar("T")

_STATUS: tuple[tuple[type[Exception], grpc.StatusCode], ...] = (
    (errors.InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (errors.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (errors.ResourceExhausted, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED),
    (errors.Unavailable, grpc.StatusCode.UNAVAILABLE),
    (errors.Unimplemented, grpc.StatusCode.UNIMPLEMENTED),
    (errors.FailedPrecondition, grpc.StatusCode.FAILED_PRECONDITION),
)

_MODES = {pb.SEARCH_MODE_UNSPECIFIED: Mode.GENERATIVE, pb.SEARCH_MODE_GENERATIVE: Mode.GENERATIVE,
          pb.SEARCH_MODE_DENSE: Mode.DENSE, pb.SEARCH_MODE_HYBRID: Mode.HYBRID, pb.SEARCH_MODE_AUTO: Mode.AUTO}


def status_for(exc: BaseException) -> grpc.StatusCode | None:
    for cls, code in _STATUS:
        if isinstance(exc, cls):
            return code
    if isinstance(exc, TimeoutError):
        return grpc.StatusCode.DEADLINE_EXCEEDED
    return None


PREPARE_WORKERS = 2  # tenants whose search preparation (a lexical index build) runs at once

_FUSIONS = {pb.FUSION_UNSPECIFIED: Fusion.DEFAULT, pb.FUSION_RRF: Fusion.RRF, pb.FUSION_DBSF: Fusion.DBSF,
            pb.FUSION_LEARNED: Fusion.LEARNED, pb.FUSION_RESCORE: Fusion.RESCORE, pb.FUSION_WEIGHTED: Fusion.WEIGHTED}


def _integral(value: Any) -> Any:
    """A Struct's numbers are doubles: whole ones back to ints (Qdrant matches ints, not 2000.0)."""
    if isinstance(value, dict):
        return {k: _integral(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integral(v) for v in value]
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


def filter_from_proto(req: pb.SearchRequest) -> dict[str, Any] | None:
    return _integral(MessageToDict(req.filter)) if req.HasField("filter") else None


def check_tenant_conditions(flt: Any, tenant: str, tenant_key: str) -> None:
    """A filter may name only the request's own tenant in conditions on the tenant field (the tenant is
    ANDed in anyway; a condition naming another is a mistake or a probe, and is refused as such)."""
    if isinstance(flt, list):
        for item in flt:
            check_tenant_conditions(item, tenant, tenant_key)
    elif isinstance(flt, dict):
        if flt.get("key") == tenant_key and isinstance(flt.get("match"), dict):
            match = flt["match"]
            named = [match["value"]] if "value" in match else list(match.get("any") or match.get("except") or [])
            others = sorted({str(v) for v in named} - {tenant})
            if others:
                raise errors.PermissionDenied(f"the filter names tenant '{others[0]}'; this request is tenant "
                                              f"'{tenant}''s")
        for value in flt.values():
            check_tenant_conditions(value, tenant, tenant_key)


def query_from_proto(req: pb.SearchRequest) -> SearchQuery:
    if req.mode not in _MODES:
        raise errors.InvalidArgument(f"unknown search mode {req.mode}")
    if req.fusion not in _FUSIONS:
        raise errors.InvalidArgument(f"unknown fusion {req.fusion}")
    threshold = req.score_threshold if req.HasField("score_threshold") else None
    min_prob = req.min_probability if req.HasField("min_probability") else None
    feedback = req.feedback if req.HasField("feedback") else None
    return SearchQuery(req.tenant, req.query, req.top_k, req.beam_size, _MODES[req.mode], threshold,
                       req.with_payload, req.index, _FUSIONS[req.fusion], min_prob, filter_from_proto(req),
                       lexical=not req.without_lexical, feedback=feedback)


def hits_to_proto(hits: Sequence[SearchHit], took_ms: float) -> pb.SearchResponse:
    out = pb.SearchResponse(took_ms=took_ms)
    for h in hits:
        hit = out.hits.add(point_id=h.point_id, docid=h.docid, score=h.score, retriever=h.retriever,
                           sources=[pb.Source(retriever=name, rank=r.rank, score=r.score)
                                    for name, r in zip(h.source_names, h.sources, strict=True)])
        if h.probability is not None:
            hit.probability = h.probability
        if h.payload:
            ParseDict(_jsonable(h.payload), hit.payload)
    return out


def info_to_proto(s: IndexStats) -> pb.IndexInfo:
    return pb.IndexInfo(index=s.index, docid_scheme=s.docid_scheme, docid_vocab_size=s.docid_vocab_size,
                        max_docid_length=s.max_docid_length, model=s.model, created_at=s.created_at,
                        genret_version=s.genret_version,
                        namespaces=[pb.NamespaceInfo(tenant=n.tenant, documents=n.documents,
                                                     trie_nodes=n.trie_nodes) for n in s.namespaces])


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, str | bool | int | float):
        return value
    return str(value)


@dataclass(frozen=True)
class Malformed:
    """A request whose bytes did not parse (see ``tolerant``): answered INVALID_ARGUMENT, after auth."""

    reason: str


def tolerant(parse: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    """Deserializer that turns corrupt bytes into a ``Malformed`` value instead of failing the call."""

    def deserialize(data: bytes) -> Any:
        try:
            return parse(data)
        except DecodeError as exc:
            return Malformed(str(exc))

    return deserialize


Method = Callable[[Any, Principal, grpc.aio.ServicerContext], Awaitable[Any]]
Handler = Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]


class GenRetServicer:
    """The genret.v1 methods. Each RPC authenticates first, then checks its request, then does the work.

    Searches go through the fair batcher onto one engine thread (the model serves one batch at a time);
    a tenant's own preparation for them (its lexical index) runs on ``PREPARE_WORKERS`` threads of its
    own, so tenants building at once never take the threads the server's health checks use; there each
    tenant has one preparation at a time, queued in turn with the other tenants'. Writes run on
    ``write_workers`` threads, one at a time per tenant, so one tenant's writes never queue another's.
    """

    def __init__(self, config: Config, engine: SearchService) -> None:
        self.config = config
        self.engine = engine
        self._writes = ThreadPoolExecutor(max_workers=config.write_workers, thread_name_prefix="genret-writer")
        self._prepares = ThreadPoolExecutor(max_workers=PREPARE_WORKERS, thread_name_prefix="genret-prepare")
        rows = config.batch_rows or (32 if engine.on_accelerator else 8)
        self._batcher: FairBatcher[SearchQuery, list[SearchHit]] = FairBatcher(engine.search, rows)
        self._keys = KeyRing(config.keys_file, grace_s=config.keys_grace_s) if config.keys_file else None
        self._limits = TenantLimiter(config.tenant_max_inflight, config.max_inflight, config.admission_wait_s)
        self._lanes: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._preparing: dict[str, asyncio.Future[None]] = {}  # tenant -> its prepare running now

    def close(self) -> None:
        self._batcher.close()
        self._writes.shutdown(wait=False, cancel_futures=True)
        self._prepares.shutdown(wait=False, cancel_futures=True)

    def methods(self) -> dict[str, tuple[Handler, Callable[[bytes], Any]]]:
        """Each RPC's handler and request parser."""
        table: dict[str, tuple[Method, Any]] = {
            "Search": (self.search, pb.SearchRequest), "SearchBatch": (self.search_batch, pb.SearchBatchRequest),
            "GetIndexInfo": (self.get_index_info, pb.GetIndexInfoRequest),
            "UpsertDocuments": (self.upsert, pb.UpsertRequest), "DeleteDocuments": (self.delete, pb.DeleteRequest),
            "ReloadKeys": (self.reload_keys, pb.ReloadKeysRequest)}
        return {name: (self._rpc(fn), tolerant(req.FromString)) for name, (fn, req) in table.items()}

    @property
    def has_keys(self) -> bool:
        """Whether callers authenticate with keys from a key file."""
        return self._keys is not None

    def principal(self, metadata: Sequence[tuple[str, str | bytes]]) -> Principal:
        """The caller's principal (UNAUTHENTICATED for a missing or unknown key); without a key file every
        caller may do everything."""
        return OPEN if self._keys is None else self._keys.authenticate(metadata)

    def _rpc(self, method: Method) -> Handler:
        async def handle(request: Any, context: grpc.aio.ServicerContext) -> Any:
            try:
                principal = self.principal(context.invocation_metadata() or ())
                if isinstance(request, Malformed):
                    raise errors.InvalidArgument(f"malformed request: {request.reason}")
                return await method(request, principal, context)
            except Exception as exc:
                code = status_for(exc)
                if code is None:
                    request_id = uuid.uuid4().hex[:12]
                    log.exception("request %s failed", request_id)
                    await context.abort(grpc.StatusCode.INTERNAL, f"internal error (request id {request_id})")
                await context.abort(code, str(exc))

        return handle

    @staticmethod
    def _authorize(principal: Principal, tenants: Sequence[str]) -> None:
        for t in tenants:
            principal.check_tenant(t)

    async def _within_deadline(self, context: grpc.aio.ServicerContext, work: Awaitable[T]) -> T:
        try:
            return await asyncio.wait_for(work, timeout=context.time_remaining())
        except TimeoutError as exc:
            raise errors.DeadlineExceeded("deadline passed while the request was being served") from exc

    def _deadline(self, context: grpc.aio.ServicerContext) -> float | None:
        remaining = context.time_remaining()
        return None if remaining is None else time.monotonic() + remaining

    async def generate(self, q: SearchQuery, context: grpc.aio.ServicerContext) -> list[SearchHit]:
        """One search, admitted for its tenant and served by the fair batcher (both doors use this)."""
        async with self._limits.admit([q.tenant]):
            return await self._within_deadline(context, self._search_one(q, self._deadline(context)))

    async def _search_one(self, q: SearchQuery, deadline: float | None) -> list[SearchHit]:
        """The engine first does, in a worker thread, what the search needs that is its tenant's alone (see
        ``SearchService.prepare``), so that work never holds up a batch of other tenants' searches; then the
        fair batcher serves it. A tenant's concurrent searches share one such thread, so one tenant's
        waiting searches never take the threads other tenants' searches need. A search that joined a
        preparation begun before it, which its tenant's write then overtook, waits for one more (begun after
        it), so it sees the writes acknowledged before it; a search never waits for more than two. What the
        preparation made is kept for the search until it has been served."""
        with self.engine.searching(q.tenant):
            for _ in range(2):
                if self.engine.prepared(q):
                    break
                running, joined = self._preparation(q)
                await asyncio.shield(running)
                if not joined:
                    break
            return await self._batcher.submit(q.tenant, q, deadline)

    def _preparation(self, q: SearchQuery) -> tuple[asyncio.Future[None], bool]:
        """The preparation under way for the search's tenant (joined: True), else a new one for the search."""
        running = self._preparing.get(q.tenant)
        if running is not None and not running.done():
            return running, True
        work = tracing.carry(lambda: self.engine.prepare(q))
        running = asyncio.ensure_future(asyncio.get_running_loop().run_in_executor(self._prepares, work))
        self._preparing[q.tenant] = running

        def forget(done: asyncio.Future[None]) -> None:
            if self._preparing.get(q.tenant) is done:
                del self._preparing[q.tenant]

        running.add_done_callback(forget)
        return running, False

    def check_writable(self) -> None:
        """A read replica (``--read-only``) refuses writes to the served collection before touching Qdrant."""
        if self.config.read_only:
            raise errors.FailedPrecondition("this replica serves reads only (--read-only): send writes to the "
                                            "collection's writer replica")

    async def write(self, tenant: str, fn: Callable[[], T], context: grpc.aio.ServicerContext) -> T:
        """A write admitted for its tenant and run in the tenant's lane (both doors use this)."""
        self.check_writable()
        async with self._limits.admit([tenant]):
            return await self._write(tenant, fn, context)

    async def _write(self, tenant: str, fn: Callable[[], T], context: grpc.aio.ServicerContext) -> T:
        """Run a write in the tenant's lane: after the tenant's earlier writes, beside other tenants' writes.
        A write holds its lane until it has finished, even if its caller stops waiting."""
        deadline = self._deadline(context)
        traced = tracing.carry(fn)
        lane = self._lanes.get(tenant)
        if lane is None:
            lane = self._lanes[tenant] = asyncio.Lock()

        async def in_lane() -> T:
            async with lane:
                if deadline is not None and time.monotonic() >= deadline:
                    raise errors.DeadlineExceeded("deadline passed while the write was queued")
                return await asyncio.get_running_loop().run_in_executor(self._writes, traced)

        return await self._within_deadline(context, asyncio.shield(asyncio.ensure_future(in_lane())))

    # --- RPCs ----------------------------------------------------------------------------------
    async def search(self, request: pb.SearchRequest, principal: Principal,
                     context: grpc.aio.ServicerContext) -> pb.SearchResponse:
        t0 = time.perf_counter()
        self._authorize(principal, [request.tenant])
        q = query_from_proto(request)
        access_log.note(tenant=q.tenant, mode=q.mode.name.lower(), query=q.text)
        check_tenant_conditions(q.filter, q.tenant, self.config.tenant_key)
        hits = await self.generate(q, context)
        return hits_to_proto(hits, (time.perf_counter() - t0) * 1e3)

    async def search_batch(self, request: pb.SearchBatchRequest, principal: Principal,
                           context: grpc.aio.ServicerContext) -> pb.SearchBatchResponse:
        t0 = time.perf_counter()
        n = len(request.requests)
        if n == 0:
            raise errors.InvalidArgument("requests is empty")
        if n > self.config.max_batch:
            raise errors.InvalidArgument(f"batch has {n} requests; the limit is {self.config.max_batch}")
        self._authorize(principal, [r.tenant for r in request.requests])
        qs = [query_from_proto(r) for r in request.requests]
        access_log.note(tenant=",".join(sorted({q.tenant for q in qs})),
                        mode=",".join(sorted({q.mode.name.lower() for q in qs})))
        for q in qs:
            check_tenant_conditions(q.filter, q.tenant, self.config.tenant_key)
        deadline = self._deadline(context)

        async def one(i: int, q: SearchQuery) -> list[SearchHit]:
            try:
                return await self._search_one(q, deadline)
            except errors.GenretError as exc:
                raise type(exc)(f"requests[{i}]: {exc}") from exc

        async with self._limits.admit([q.tenant for q in qs]):
            rows = asyncio.gather(*(one(i, q) for i, q in enumerate(qs)))
            results = await self._within_deadline(context, rows)
        took = (time.perf_counter() - t0) * 1e3
        return pb.SearchBatchResponse(responses=[hits_to_proto(h, took) for h in results])

    async def get_index_info(self, request: pb.GetIndexInfoRequest, principal: Principal,
                             context: grpc.aio.ServicerContext) -> pb.IndexInfo:
        if request.tenant:
            self._authorize(principal, [request.tenant])
        else:
            principal.check_admin()  # the list of tenants is itself tenant data
        return info_to_proto(self.engine.info(request.tenant))

    async def upsert(self, request: pb.UpsertRequest, principal: Principal,
                     context: grpc.aio.ServicerContext) -> pb.UpsertResponse:
        t0 = time.perf_counter()
        self._authorize(principal, [request.tenant])
        access_log.note(tenant=request.tenant)
        docs = [NewDocument(d.id, d.title, d.text, MessageToDict(d.payload),
                            {name: list(v.values) for name, v in d.vectors.items()}) for d in request.documents]
        done = await self.write(request.tenant, lambda: self.engine.upsert(request.tenant, docs, request.index),
                                context)
        return pb.UpsertResponse(
            documents=[pb.UpsertedDocument(id=u.doc_id, point_id=u.point_id, docid=u.docid, created=u.created)
                       for u in done], took_ms=(time.perf_counter() - t0) * 1e3)

    async def delete(self, request: pb.DeleteRequest, principal: Principal,
                     context: grpc.aio.ServicerContext) -> pb.DeleteResponse:
        t0 = time.perf_counter()
        self._authorize(principal, [request.tenant])
        access_log.note(tenant=request.tenant)
        ids = list(request.ids)
        res = await self.write(request.tenant, lambda: self.engine.delete(request.tenant, ids, request.index),
                               context)
        return pb.DeleteResponse(deleted=res.deleted, not_found=res.not_found, took_ms=(time.perf_counter() - t0) * 1e3)

    async def reload_keys(self, request: pb.ReloadKeysRequest, principal: Principal,
                          context: grpc.aio.ServicerContext) -> pb.ReloadKeysResponse:
        principal.check_admin()
        if self._keys is None:
            raise errors.FailedPrecondition("the server runs without an API key file")
        return pb.ReloadKeysResponse(keys=self._keys.reload())


__all__ = ["GenRetServicer", "Malformed", "status_for", "tolerant"]

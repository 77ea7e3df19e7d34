"""gRPC servicer: protobuf in, domain objects to the engine, protobuf out. No torch here.

One function, ``status_for``, maps domain errors to gRPC status codes; anything unexpected is logged
with a request id and answered INTERNAL without internals.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import grpc
from google.protobuf.json_format import ParseDict

from genret import errors
from genret.auth import OPEN, KeyRing, Principal
from genret.batcher import MicroBatcher
from genret.config import Config
from genret.engine import Engine, IndexStats, SearchHit, SearchQuery
from genret.limits import TenantLimiter
from genret.modes import Fusion, Mode
from genret.v1 import genret_pb2 as pb
from genret.v1 import genret_pb2_grpc as pb_grpc
from genret.writer import NewDocument

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


_FUSIONS = {pb.FUSION_UNSPECIFIED: Fusion.DEFAULT, pb.FUSION_RRF: Fusion.RRF, pb.FUSION_LEARNED: Fusion.LEARNED,
            pb.FUSION_RESCORE: Fusion.RESCORE, pb.FUSION_WEIGHTED: Fusion.WEIGHTED}


def query_from_proto(req: pb.SearchRequest) -> SearchQuery:
    if req.mode not in _MODES:
        raise errors.InvalidArgument(f"unknown search mode {req.mode}")
    if req.fusion not in _FUSIONS:
        raise errors.InvalidArgument(f"unknown fusion {req.fusion}")
    threshold = req.score_threshold if req.HasField("score_threshold") else None
    min_prob = req.min_probability if req.HasField("min_probability") else None
    return SearchQuery(req.tenant, req.query, req.top_k, req.beam_size, _MODES[req.mode], threshold,
                       req.with_payload, req.index, _FUSIONS[req.fusion], min_prob)


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


class GenRetServicer(pb_grpc.GenRetServicer):
    """Runs engine work on one worker thread (the model is used by one batch at a time)."""

    def __init__(self, config: Config, engine: Engine) -> None:
        self.config = config
        self.engine = engine
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="genret-engine")
        self._writes = ThreadPoolExecutor(max_workers=1, thread_name_prefix="genret-writer")
        self._batcher: MicroBatcher[SearchQuery, list[SearchHit]] = MicroBatcher(
            engine.search_batch, self._pool, config.max_batch)
        self._keys = KeyRing(config.keys_file) if config.keys_file else None
        self._limits = TenantLimiter(config.tenant_max_inflight, config.max_inflight)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._writes.shutdown(wait=False, cancel_futures=True)

    def _principal(self, context: grpc.aio.ServicerContext) -> Principal:
        if self._keys is None:
            return OPEN
        return self._keys.authenticate(context.invocation_metadata() or ())

    def _authorize(self, context: grpc.aio.ServicerContext, tenants: Sequence[str]) -> None:
        principal = self._principal(context)
        for t in tenants:
            if not t:
                raise errors.InvalidArgument("tenant is required")
            principal.check_tenant(t)

    async def _write(self, fn: Callable[[], T], context: grpc.aio.ServicerContext) -> T:
        run = asyncio.get_running_loop().run_in_executor(self._writes, fn)
        return await self._within_deadline(context, run)

    async def _within_deadline(self, context: grpc.aio.ServicerContext, work: Awaitable[T]) -> T:
        try:
            return await asyncio.wait_for(work, timeout=context.time_remaining())
        except TimeoutError as exc:
            raise errors.DeadlineExceeded("deadline passed while the request was being served") from exc

    async def _guard(self, context: grpc.aio.ServicerContext, work: Callable[[], Any]) -> Any:
        request_id = uuid.uuid4().hex[:12]
        try:
            return await work()
        except Exception as exc:
            code = status_for(exc)
            if code is None:
                log.exception("request %s failed", request_id)
                await context.abort(grpc.StatusCode.INTERNAL, f"internal error (request id {request_id})")
            await context.abort(code, str(exc))

    def _deadline(self, context: grpc.aio.ServicerContext) -> float | None:
        remaining = context.time_remaining()
        return None if remaining is None else time.monotonic() + remaining

    async def Search(self, request: pb.SearchRequest, context: grpc.aio.ServicerContext) -> pb.SearchResponse:
        async def work() -> pb.SearchResponse:
            t0 = time.perf_counter()
            self._authorize(context, [request.tenant])
            q = self.engine.normalise(query_from_proto(request))
            with self._limits.admit([q.tenant]):
                hits = await self._within_deadline(context, self._batcher.submit(q, self._deadline(context)))
            return hits_to_proto(hits, (time.perf_counter() - t0) * 1e3)

        return await self._guard(context, work)

    async def SearchBatch(self, request: pb.SearchBatchRequest,
                          context: grpc.aio.ServicerContext) -> pb.SearchBatchResponse:
        async def work() -> pb.SearchBatchResponse:
            t0 = time.perf_counter()
            n = len(request.requests)
            if n == 0:
                raise errors.InvalidArgument("requests is empty")
            if n > self.config.max_batch:
                raise errors.InvalidArgument(f"batch has {n} requests; the limit is {self.config.max_batch}")
            self._authorize(context, [r.tenant for r in request.requests])
            qs = []
            for i, r in enumerate(request.requests):
                try:
                    qs.append(self.engine.normalise(query_from_proto(r)))
                except errors.GenretError as exc:
                    raise type(exc)(f"requests[{i}]: {exc}") from exc
            deadline = self._deadline(context)
            with self._limits.admit([q.tenant for q in qs]):
                run = asyncio.get_running_loop().run_in_executor(self._pool, self.engine.search_batch, qs, deadline)
                results = await self._within_deadline(context, run)
            took = (time.perf_counter() - t0) * 1e3
            return pb.SearchBatchResponse(responses=[hits_to_proto(h, took) for h in results])

        return await self._guard(context, work)

    async def GetIndexInfo(self, request: pb.GetIndexInfoRequest,
                           context: grpc.aio.ServicerContext) -> pb.IndexInfo:
        async def work() -> pb.IndexInfo:
            if request.tenant:
                self._authorize(context, [request.tenant])
            else:
                self._principal(context).check_admin()  # the list of tenants is itself tenant data
            return info_to_proto(self.engine.info(request.tenant))

        return await self._guard(context, work)

    async def UpsertDocuments(self, request: pb.UpsertRequest,
                              context: grpc.aio.ServicerContext) -> pb.UpsertResponse:
        async def work() -> pb.UpsertResponse:
            t0 = time.perf_counter()
            self._authorize(context, [request.tenant])
            docs = [NewDocument(d.id, d.title, d.text) for d in request.documents]
            with self._limits.admit([request.tenant]):
                done = await self._write(lambda: self.engine.upsert(request.tenant, docs, request.index), context)
            return pb.UpsertResponse(
                documents=[pb.UpsertedDocument(id=u.doc_id, point_id=u.point_id, docid=u.docid, created=u.created)
                           for u in done], took_ms=(time.perf_counter() - t0) * 1e3)

        return await self._guard(context, work)

    async def DeleteDocuments(self, request: pb.DeleteRequest,
                              context: grpc.aio.ServicerContext) -> pb.DeleteResponse:
        async def work() -> pb.DeleteResponse:
            t0 = time.perf_counter()
            self._authorize(context, [request.tenant])
            ids = list(request.ids)
            with self._limits.admit([request.tenant]):
                res = await self._write(lambda: self.engine.delete(request.tenant, ids, request.index), context)
            return pb.DeleteResponse(deleted=res.deleted, not_found=res.not_found,
                                     took_ms=(time.perf_counter() - t0) * 1e3)

        return await self._guard(context, work)

    async def ReloadKeys(self, request: pb.ReloadKeysRequest,
                         context: grpc.aio.ServicerContext) -> pb.ReloadKeysResponse:
        async def work() -> pb.ReloadKeysResponse:
            self._principal(context).check_admin()
            if self._keys is None:
                raise errors.FailedPrecondition("the server runs without an API key file")
            return pb.ReloadKeysResponse(keys=self._keys.reload())

        return await self._guard(context, work)


__all__ = ["GenRetServicer", "status_for"]

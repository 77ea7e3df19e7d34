"""Qdrant's gRPC API, executed: the calls the front door passes on reach Qdrant here.

Two upstreams answer a call given as (service, method, request bytes) with the response bytes Qdrant
would send, or raise ``WireError`` with Qdrant's status code and message:

* ``ServerUpstream`` forwards the bytes unchanged over a gRPC channel to a Qdrant server (``--qdrant-url``);
  a pass-through call is never parsed.
* ``EmbeddedUpstream`` runs the call on the embedded Qdrant (qdrant-client's local mode) through the
  library's own grpc <-> REST conversions. It serves the calls qdrant-client's common methods make (see
  ``EMBEDDED_METHODS``); any other is UNIMPLEMENTED, naming the method. The local mode reports bad requests
  as Python errors: a missing collection or point becomes NOT_FOUND, any other refusal INVALID_ARGUMENT.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol
from urllib.parse import urlparse

import grpc
from google.protobuf.message import DecodeError, Message
from qdrant_client import QdrantClient
from qdrant_client import grpc as qg
from qdrant_client.conversions.conversion import GrpcToRest, RestToGrpc

from genret.turns import TurnLock

POINTS = "qdrant.Points"
COLLECTIONS = "qdrant.Collections"
ROOT = "qdrant.Qdrant"
Metadata = Sequence[tuple[str, str | bytes]]


class WireError(Exception):
    """A call Qdrant refused: its status code and message, to be passed on as they are."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class Upstream(Protocol):
    async def call(self, service: str, method: str, request: bytes, metadata: Metadata = (),
                   timeout: float | None = None) -> bytes: ...

    async def close(self) -> None: ...


class ServerUpstream:
    """A Qdrant server's gRPC port; requests and responses pass as bytes. The sidecar's own Qdrant API key,
    when it has one, replaces the caller's ``api-key``; without one the caller's is passed on."""

    def __init__(self, url: str, api_key: str = "", grpc_port: int = 6334) -> None:
        parsed = urlparse(url if "://" in url else f"http://{url}")
        self._target = f"{parsed.hostname}:{grpc_port}"
        self._secure = parsed.scheme == "https"
        self._api_key = api_key
        self._channel: grpc.aio.Channel | None = None  # opened on the first call, on the serving loop
        self._calls: dict[str, grpc.aio.UnaryUnaryMultiCallable] = {}

    def _open(self) -> grpc.aio.Channel:
        if self._channel is None:
            options = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]
            self._channel = (grpc.aio.secure_channel(self._target, grpc.ssl_channel_credentials(), options)
                             if self._secure else grpc.aio.insecure_channel(self._target, options))
        return self._channel

    async def call(self, service: str, method: str, request: bytes, metadata: Metadata = (),
                   timeout: float | None = None) -> bytes:
        path = f"/{service}/{method}"
        fn = self._calls.get(path)
        if fn is None:
            fn = self._calls[path] = self._open().unary_unary(path)
        passed = [(k, v) for k, v in metadata if k.lower() in {"api-key", "authorization"} and not self._api_key]
        if self._api_key:
            passed.append(("api-key", self._api_key))
        try:
            return bytes(await fn(request, metadata=passed, timeout=timeout))
        except grpc.aio.AioRpcError as exc:
            raise WireError(exc.code(), exc.details() or "") from exc

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close()


def _selector(msg: Any) -> Any:
    return GrpcToRest.convert_points_selector(msg)


def _payload_arg(msg: Any) -> Any:
    return GrpcToRest.convert_with_payload_selector(msg.with_payload) if msg.HasField("with_payload") else True


def _vectors_arg(msg: Any) -> Any:
    return GrpcToRest.convert_with_vectors_selector(msg.with_vectors) if msg.HasField("with_vectors") else False


def _filter(msg: Any, field: str = "filter") -> Any:
    return GrpcToRest.convert_filter(getattr(msg, field)) if msg.HasField(field) else None


def _record(rec: Any) -> qg.RetrievedPoint:
    """A record as a server sends it: a point read without its payload has an empty one."""
    return RestToGrpc.convert_record(rec if rec.payload is not None else rec.model_copy(update={"payload": {}}))


def _update(client: QdrantClient, result: Any) -> qg.PointsOperationResponse:
    return qg.PointsOperationResponse(result=RestToGrpc.convert_update_result(result))


def _upsert(c: QdrantClient, r: qg.UpsertPoints) -> Message:
    points = [GrpcToRest.convert_point_struct(p) for p in r.points]
    return _update(c, c.upsert(r.collection_name, points=points, wait=True, update_filter=_filter(r, "update_filter")))


def _delete(c: QdrantClient, r: qg.DeletePoints) -> Message:
    return _update(c, c.delete(r.collection_name, points_selector=_selector(r.points), wait=True))


def _get(c: QdrantClient, r: qg.GetPoints) -> Message:
    ids = [GrpcToRest.convert_point_id(i) for i in r.ids]
    records = c.retrieve(r.collection_name, ids, with_payload=_payload_arg(r), with_vectors=_vectors_arg(r))
    return qg.GetResponse(result=[_record(x) for x in records])


def _set_payload(c: QdrantClient, r: qg.SetPayloadPoints) -> Message:
    payload = GrpcToRest.convert_payload(r.payload)
    return _update(c, c.set_payload(r.collection_name, payload, points=_selector(r.points_selector), wait=True,
                                    key=r.key if r.HasField("key") else None))


def _overwrite_payload(c: QdrantClient, r: qg.SetPayloadPoints) -> Message:
    payload = GrpcToRest.convert_payload(r.payload)
    return _update(c, c.overwrite_payload(r.collection_name, payload, points=_selector(r.points_selector), wait=True))


def _delete_payload(c: QdrantClient, r: qg.DeletePayloadPoints) -> Message:
    return _update(c, c.delete_payload(r.collection_name, list(r.keys), points=_selector(r.points_selector),
                                       wait=True))


def _clear_payload(c: QdrantClient, r: qg.ClearPayloadPoints) -> Message:
    return _update(c, c.clear_payload(r.collection_name, points_selector=_selector(r.points), wait=True))


def _update_vectors(c: QdrantClient, r: qg.UpdatePointVectors) -> Message:
    points = [GrpcToRest.convert_point_vectors(p) for p in r.points]
    return _update(c, c.update_vectors(r.collection_name, points, wait=True))


def _delete_vectors(c: QdrantClient, r: qg.DeletePointVectors) -> Message:
    return _update(c, c.delete_vectors(r.collection_name, list(r.vectors.names), _selector(r.points_selector),
                                       wait=True))


def _update_batch(c: QdrantClient, r: qg.UpdateBatchPoints) -> Message:
    ops = [GrpcToRest.convert_points_update_operation(o) for o in r.operations]
    res = c.batch_update_points(r.collection_name, ops, wait=True)
    return qg.UpdateBatchResponse(result=[RestToGrpc.convert_update_result(x) for x in res])


def _scroll(c: QdrantClient, r: qg.ScrollPoints) -> Message:
    offset = GrpcToRest.convert_point_id(r.offset) if r.HasField("offset") else None
    order_by = GrpcToRest.convert_order_by(r.order_by) if r.HasField("order_by") else None
    records, nxt = c.scroll(r.collection_name, scroll_filter=_filter(r), limit=r.limit if r.HasField("limit") else 10,
                            offset=offset, with_payload=_payload_arg(r), with_vectors=_vectors_arg(r),
                            order_by=order_by)
    out = qg.ScrollResponse(result=[_record(x) for x in records])
    if nxt is not None:
        out.next_page_offset.CopyFrom(RestToGrpc.convert_extended_point_id(nxt))
    return out


def _count(c: QdrantClient, r: qg.CountPoints) -> Message:
    res = c.count(r.collection_name, count_filter=_filter(r), exact=r.exact if r.HasField("exact") else True)
    return qg.CountResponse(result=RestToGrpc.convert_count_result(res))


def _query(c: QdrantClient, r: qg.QueryPoints) -> Message:
    res = c.query_batch_points(r.collection_name, [GrpcToRest.convert_query_points(r)])[0]
    return qg.QueryResponse(result=[RestToGrpc.convert_scored_point(p) for p in res.points])


def _query_batch(c: QdrantClient, r: qg.QueryBatchPoints) -> Message:
    res = c.query_batch_points(r.collection_name, [GrpcToRest.convert_query_points(q) for q in r.query_points])
    return qg.QueryBatchResponse(result=[qg.BatchResult(result=[RestToGrpc.convert_scored_point(p)
                                                                for p in x.points]) for x in res])


def _query_groups(c: QdrantClient, r: qg.QueryPointGroups) -> Message:
    plain = qg.QueryPoints(collection_name=r.collection_name, prefetch=list(r.prefetch), with_payload=r.with_payload)
    for name in ("query", "filter", "params", "with_vectors", "lookup_from"):
        if r.HasField(name):  # type: ignore[arg-type]
            getattr(plain, name).CopyFrom(getattr(r, name))
    if r.HasField("using"):
        plain.using = r.using
    if r.HasField("score_threshold"):
        plain.score_threshold = r.score_threshold
    req = GrpcToRest.convert_query_points(plain)
    lookup = GrpcToRest.convert_with_lookup(r.with_lookup) if r.HasField("with_lookup") else None
    res = c.query_points_groups(
        r.collection_name, r.group_by, query=req.query, using=req.using, prefetch=req.prefetch,
        query_filter=req.filter, search_params=req.params, limit=r.limit if r.HasField("limit") else 3,
        group_size=r.group_size if r.HasField("group_size") else 10,
        with_payload=req.with_payload if req.with_payload is not None else True,
        with_vectors=req.with_vector or False, score_threshold=req.score_threshold, with_lookup=lookup,
        lookup_from=req.lookup_from)
    return qg.QueryGroupsResponse(result=RestToGrpc.convert_groups_result(res))


def _facet(c: QdrantClient, r: qg.FacetCounts) -> Message:
    res = c.facet(r.collection_name, r.key, facet_filter=_filter(r), limit=r.limit if r.HasField("limit") else 10,
                  exact=r.exact if r.HasField("exact") else False)
    return qg.FacetResponse(hits=[RestToGrpc.convert_facet_value_hit(h) for h in res.hits])


def _create_index(c: QdrantClient, r: qg.CreateFieldIndexCollection) -> Message:
    if r.HasField("field_index_params"):
        schema: Any = GrpcToRest.convert_payload_schema_params(r.field_index_params)
    else:
        schema = qg.FieldType.Name(r.field_type).removeprefix("FieldType").lower() if r.HasField("field_type") else None
    return _update(c, c.create_payload_index(r.collection_name, r.field_name, field_schema=schema, wait=True))


def _delete_index(c: QdrantClient, r: qg.DeleteFieldIndexCollection) -> Message:
    return _update(c, c.delete_payload_index(r.collection_name, r.field_name, wait=True))


def _collection_get(c: QdrantClient, r: qg.GetCollectionInfoRequest) -> Message:
    info = c.get_collection(r.collection_name)
    return qg.GetCollectionInfoResponse(result=RestToGrpc.convert_collection_info(info))


def _collection_list(c: QdrantClient, r: qg.ListCollectionsRequest) -> Message:
    res = c.get_collections()
    return qg.ListCollectionsResponse(collections=[RestToGrpc.convert_collection_description(d)
                                                   for d in res.collections])


def _collection_exists(c: QdrantClient, r: qg.CollectionExistsRequest) -> Message:
    return qg.CollectionExistsResponse(result=qg.CollectionExists(exists=c.collection_exists(r.collection_name)))


def _collection_create(c: QdrantClient, r: qg.CreateCollection) -> Message:
    vectors = GrpcToRest.convert_vectors_config(r.vectors_config) if r.HasField("vectors_config") else None
    sparse = (GrpcToRest.convert_sparse_vector_config(r.sparse_vectors_config)
              if r.HasField("sparse_vectors_config") else None)
    done = c.create_collection(r.collection_name, vectors_config=vectors, sparse_vectors_config=sparse)
    return qg.CollectionOperationResponse(result=bool(done))


def _collection_delete(c: QdrantClient, r: qg.DeleteCollection) -> Message:
    return qg.CollectionOperationResponse(result=bool(c.delete_collection(r.collection_name)))


def _health(c: QdrantClient, r: qg.HealthCheckRequest) -> Message:
    from genret.store import qdrant_client_version

    return qg.HealthCheckReply(title="qdrant - genret front door (embedded Qdrant)",
                               version=qdrant_client_version())


Handler = Callable[[QdrantClient, Any], Message]
EMBEDDED_METHODS: dict[tuple[str, str], tuple[type[Message], Handler]] = {
    (POINTS, "Upsert"): (qg.UpsertPoints, _upsert),
    (POINTS, "Delete"): (qg.DeletePoints, _delete),
    (POINTS, "Get"): (qg.GetPoints, _get),
    (POINTS, "SetPayload"): (qg.SetPayloadPoints, _set_payload),
    (POINTS, "OverwritePayload"): (qg.SetPayloadPoints, _overwrite_payload),
    (POINTS, "DeletePayload"): (qg.DeletePayloadPoints, _delete_payload),
    (POINTS, "ClearPayload"): (qg.ClearPayloadPoints, _clear_payload),
    (POINTS, "UpdateVectors"): (qg.UpdatePointVectors, _update_vectors),
    (POINTS, "DeleteVectors"): (qg.DeletePointVectors, _delete_vectors),
    (POINTS, "CreateFieldIndex"): (qg.CreateFieldIndexCollection, _create_index),
    (POINTS, "DeleteFieldIndex"): (qg.DeleteFieldIndexCollection, _delete_index),
    (POINTS, "UpdateBatch"): (qg.UpdateBatchPoints, _update_batch),
    (POINTS, "Scroll"): (qg.ScrollPoints, _scroll),
    (POINTS, "Count"): (qg.CountPoints, _count),
    (POINTS, "Query"): (qg.QueryPoints, _query),
    (POINTS, "QueryBatch"): (qg.QueryBatchPoints, _query_batch),
    (POINTS, "QueryGroups"): (qg.QueryPointGroups, _query_groups),
    (POINTS, "Facet"): (qg.FacetCounts, _facet),
    (COLLECTIONS, "Get"): (qg.GetCollectionInfoRequest, _collection_get),
    (COLLECTIONS, "List"): (qg.ListCollectionsRequest, _collection_list),
    (COLLECTIONS, "CollectionExists"): (qg.CollectionExistsRequest, _collection_exists),
    (COLLECTIONS, "Create"): (qg.CreateCollection, _collection_create),
    (COLLECTIONS, "Delete"): (qg.DeleteCollection, _collection_delete),
    (ROOT, "HealthCheck"): (qg.HealthCheckRequest, _health),
}


def local_status(exc: Exception) -> WireError:
    """The status a Qdrant server gives for what the local mode raises."""
    text = str(exc) or type(exc).__name__
    if isinstance(exc, ValueError | KeyError | TypeError | AssertionError):
        lowered = text.lower()
        code = grpc.StatusCode.NOT_FOUND if "not found" in lowered or "doesn't exist" in lowered \
            else grpc.StatusCode.INVALID_ARGUMENT
        return WireError(code, text)
    return WireError(grpc.StatusCode.INTERNAL, text)


class EmbeddedUpstream:
    """The embedded Qdrant, called in turns with the sidecar's other users of it (``lock``)."""

    def __init__(self, client: QdrantClient, lock: TurnLock | None) -> None:
        self._client = client
        self._lock = lock

    def _run(self, handler: Handler, request: Any) -> bytes:
        t0 = time.perf_counter()
        try:
            if self._lock is None:
                out = handler(self._client, request)
            else:
                with self._lock:
                    out = handler(self._client, request)
        except WireError:
            raise
        except Exception as exc:
            raise local_status(exc) from exc
        if "time" in out.DESCRIPTOR.fields_by_name:
            out.time = time.perf_counter() - t0  # type: ignore[attr-defined]
        return out.SerializeToString()

    async def call(self, service: str, method: str, request: bytes, metadata: Metadata = (),
                   timeout: float | None = None) -> bytes:
        """``timeout`` is not enforced here: a local call, once started, runs to its end."""
        entry = EMBEDDED_METHODS.get((service, method))
        if entry is None:
            raise WireError(grpc.StatusCode.UNIMPLEMENTED,
                            f"{service}/{method} is not available on the embedded Qdrant; "
                            "run genret with --qdrant-url to reach a Qdrant server for it")
        cls, handler = entry
        try:
            parsed = cls.FromString(request)
        except DecodeError as exc:
            raise WireError(grpc.StatusCode.INVALID_ARGUMENT, f"malformed {cls.__name__}: {exc}") from exc
        return await asyncio.get_running_loop().run_in_executor(None, self._run, handler, parsed)

    async def close(self) -> None:
        return None


__all__ = ["COLLECTIONS", "EMBEDDED_METHODS", "POINTS", "ROOT", "EmbeddedUpstream", "ServerUpstream",
           "Upstream", "WireError", "local_status"]

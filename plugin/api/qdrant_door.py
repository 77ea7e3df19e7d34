"""The Qdrant-wire front door: Qdrant's own gRPC services, with generative retrieval inside ``Query``.

Every method of ``qdrant.Points``, ``qdrant.Collections``, ``qdrant.Snapshots`` and ``qdrant.Qdrant`` is
served. A call that does not involve genret goes to Qdrant unchanged (``genret.store.wire``) and its answer
or error comes back as Qdrant gave it. genret steps in for:

* ``Query`` / ``QueryBatch`` whose query or any prefetch's query is a genret ``Document``
  (``genret.api.qdrant_query``); ``QueryGroups`` with a genret leaf is UNIMPLEMENTED;
* writes to the served collection (``Upsert``, ``Delete``, ``SetPayload``, ``OverwritePayload``,
  ``DeletePayload``, ``ClearPayload``, ``UpdateVectors``, ``DeleteVectors``): Qdrant first, with ``wait``
  set, then the namespaces of every tenant the touched points were or are in follow Qdrant
  (``SearchService.sync``). A write Qdrant refuses changes nothing. A selector by filter is resolved to
  point ids first, so genret follows exactly the points written. ``UpdateBatch`` keeps its filters (Qdrant
  applies each after the operations before it) and genret follows the points they select before and after
  the batch, with every other operation's points (its deprecated operation kinds are UNIMPLEMENTED).

Keys. Without a key file every caller may do everything, and a genret leaf's tenant is the one its filter
names with a ``must`` match on the tenant field. With a key file (keys also as Qdrant's ``api-key``):
an admin key may do everything; a key bound to tenants reaches only their points: its tenant condition is
ANDed into every read (``Query``, ``QueryBatch``, ``Scroll``, ``Count``, ``Facet``; ``Get`` keeps its own
points), every write must touch only its points and leave them in its tenants, a filter naming another
tenant is PERMISSION_DENIED, and every other method (collection management, ``Search``, ``Recommend``, ...)
needs the admin key.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import grpc
import qdrant_client.grpc as qg
from google.protobuf.message import DecodeError, Message
from qdrant_client.conversions.conversion import GrpcToRest
from qdrant_client.grpc import collections_service_pb2, points_service_pb2, qdrant_pb2, snapshots_service_pb2

from genret import errors
from genret.api import access_log
from genret.api.auth import Principal
from genret.api.qdrant_query import QueryPlan, Scored, genret_text, has_genret, key_of, with_ids
from genret.api.servicer import GenRetServicer, status_for
from genret.config import Config
from genret.store.wire import COLLECTIONS, POINTS, ROOT, Upstream, WireError
from genret.types import Mode, SearchQuery

log = logging.getLogger(__name__)

SERVICES = tuple(s for m in (points_service_pb2, collections_service_pb2, qdrant_pb2, snapshots_service_pb2)
                 for s in m.DESCRIPTOR.services_by_name.values())
WRITES: dict[str, type[Message]] = {
    "Upsert": qg.UpsertPoints, "Delete": qg.DeletePoints, "SetPayload": qg.SetPayloadPoints,
    "OverwritePayload": qg.SetPayloadPoints, "DeletePayload": qg.DeletePayloadPoints,
    "ClearPayload": qg.ClearPayloadPoints, "UpdateVectors": qg.UpdatePointVectors,
    "DeleteVectors": qg.DeletePointVectors, "UpdateBatch": qg.UpdateBatchPoints}
SELECTOR_FIELD = {"Delete": "points", "SetPayload": "points_selector", "OverwritePayload": "points_selector",
                  "DeletePayload": "points_selector", "ClearPayload": "points", "DeleteVectors": "points_selector"}
BATCH_OPERATIONS = {"upsert": "Upsert", "update_vectors": "UpdateVectors", "set_payload": "SetPayload",
                    "overwrite_payload": "OverwritePayload", "delete_payload": "DeletePayload",
                    "delete_vectors": "DeleteVectors", "delete_points": "Delete", "clear_payload": "ClearPayload"}
TENANT_READS: dict[str, type[Message]] = {"Scroll": qg.ScrollPoints, "Count": qg.CountPoints,
                                          "Facet": qg.FacetCounts}
OPEN_TO_TENANT_KEYS = {(ROOT, "HealthCheck"), (COLLECTIONS, "CollectionExists")}
Forward = Callable[[str, str, bytes], Awaitable[bytes]]  # (service, method, request) -> Qdrant's response
MAX_RESOLVED = 16_384  # points one write by filter may touch
BEAM_OPTION = "beam"


def point_id(pid: str) -> qg.PointId:
    return qg.PointId(num=int(pid)) if pid.isdigit() else qg.PointId(uuid=pid)


def id_text(pid: qg.PointId) -> str:
    key = key_of(pid)
    return str(key) if isinstance(key, int) else str(uuid.UUID(key))


def _parse(cls: type[Message], data: bytes) -> Any:
    try:
        return cls.FromString(data)
    except DecodeError as exc:
        raise errors.InvalidArgument(f"malformed {cls.__name__}: {exc}") from exc


def _keyword(value: Any) -> str | None:
    kind = value.WhichOneof("kind") if value is not None else None
    return value.string_value if kind == "string_value" else None


class QdrantDoor:
    """The handlers of the Qdrant services; ``genret`` is the genret.v1 servicer (keys, queues, lanes)."""

    def __init__(self, config: Config, upstream: Upstream, genret: GenRetServicer) -> None:
        self.config = config
        self.upstream = upstream
        self.genret = genret
        self.collection = genret.engine.collection
        self.tenant_key = config.tenant_key

    def handlers(self) -> list[grpc.GenericRpcHandler]:
        out = []
        for service in SERVICES:
            methods = {m.name: grpc.unary_unary_rpc_method_handler(self._handler(service.full_name, m.name))
                       for m in service.methods}
            out.append(grpc.method_handlers_generic_handler(service.full_name, methods))
        return out

    def _handler(self, service: str, method: str) -> Callable[[bytes, grpc.aio.ServicerContext], Awaitable[bytes]]:
        async def handle(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
            metadata = tuple(context.invocation_metadata() or ())
            try:
                principal = self.genret.principal(metadata)
                return await self._route(service, method, request, principal, metadata, context)
            except WireError as exc:
                await context.abort(exc.code, exc.details)
            except Exception as exc:
                code = status_for(exc)
                if code is None:
                    request_id = uuid.uuid4().hex[:12]
                    log.exception("request %s (%s/%s) failed", request_id, service, method)
                    await context.abort(grpc.StatusCode.INTERNAL, f"internal error (request id {request_id})")
                await context.abort(code, str(exc))
            raise AssertionError("unreachable")  # abort raises

        return handle

    # --- routing -------------------------------------------------------------------------------
    async def _route(self, service: str, method: str, request: bytes, principal: Principal,
                     metadata: Sequence[tuple[str, str | bytes]], context: grpc.aio.ServicerContext) -> bytes:
        forward = self._forwarder(metadata, context)
        if service == POINTS and method in ("Query", "QueryBatch", "QueryGroups"):
            return await self._query(method, request, principal, forward, context)
        if service == POINTS and method in WRITES:
            return await self._write(method, request, principal, forward, context)
        if principal.admin:
            return await forward(service, method, request)
        if (service, method) in OPEN_TO_TENANT_KEYS:
            return await forward(service, method, request)
        if service == POINTS and method in TENANT_READS:
            req = _parse(TENANT_READS[method], request)
            self._own_collection(req.collection_name)
            self._scope(req, "filter", principal)
            return await forward(service, method, req.SerializeToString())
        if service == POINTS and method == "Get":
            return await self._get_own(request, principal, forward)
        raise errors.PermissionDenied(f"{service}/{method} through the front door needs an admin key")

    def _forwarder(self, metadata: Sequence[tuple[str, str | bytes]],
                   context: grpc.aio.ServicerContext) -> Forward:
        """Calls to Qdrant for one request, within its deadline."""
        passed = () if self.genret.has_keys else tuple(metadata)  # a genret key is never passed on

        async def forward(service: str, method: str, request: bytes) -> bytes:
            return await self.upstream.call(service, method, request, passed, context.time_remaining())

        return forward

    def _own_collection(self, name: str) -> None:
        if name != self.collection:
            raise errors.PermissionDenied(f"a tenant key reaches only collection '{self.collection}'")

    # --- tenants -------------------------------------------------------------------------------
    def tenant_sets(self, flt: qg.Filter | None) -> list[set[str]]:
        """The tenant sets a filter requires a point to be in: one per ``must`` match on the tenant field
        (nested ``must`` filters too). A point passes only if its tenant is in every one."""
        out: list[set[str]] = []
        if flt is None:
            return out
        for cond in flt.must:
            kind = cond.WhichOneof("condition_one_of")
            if kind == "field" and cond.field.key == self.tenant_key and cond.field.HasField("match"):
                m = cond.field.match
                which = m.WhichOneof("match_value")
                if which == "keyword":
                    out.append({m.keyword})
                elif which == "keywords":
                    out.append(set(m.keywords.strings))
                else:
                    raise errors.InvalidArgument(f"the tenant field '{self.tenant_key}' is matched by {which}; "
                                                 "match it by keyword")
            elif kind == "filter":
                out += self.tenant_sets(cond.filter)
        return out

    def tenants_named(self, flt: qg.Filter | None) -> set[str]:
        """Every tenant a filter's tenant matches name."""
        return set().union(*self.tenant_sets(flt))

    def _tenant_condition(self, tenants: Iterable[str]) -> qg.Condition:
        names = sorted(tenants)
        match = (qg.Match(keyword=names[0]) if len(names) == 1
                 else qg.Match(keywords=qg.RepeatedStrings(strings=names)))
        return qg.Condition(field=qg.FieldCondition(key=self.tenant_key, match=match))

    def _scope(self, msg: Any, field: str, principal: Principal) -> None:
        """AND a tenant key's tenants into ``msg.<field>``; a filter naming another tenant is refused."""
        if principal.admin:
            return
        flt = getattr(msg, field) if msg.HasField(field) else None
        named = self.tenants_named(flt)
        for t in named:
            principal.check_tenant(t)
        getattr(msg, field).must.append(self._tenant_condition(named or principal.tenants))

    # --- queries -------------------------------------------------------------------------------
    async def _query(self, method: str, request: bytes, principal: Principal,
                     forward: Forward,
                     context: grpc.aio.ServicerContext) -> bytes:
        cls = {"Query": qg.QueryPoints, "QueryBatch": qg.QueryBatchPoints, "QueryGroups": qg.QueryPointGroups}[method]
        req = _parse(cls, request)
        queries = list(req.query_points) if method == "QueryBatch" else [req]
        genret = [has_genret(q) for q in queries]
        if not principal.admin:
            self._own_collection(req.collection_name)
            for q in queries:
                if q.HasField("lookup_from"):
                    raise errors.PermissionDenied("lookup_from through the front door needs an admin key")
                self._scope(q, "filter", principal)  # in place: ``queries`` are req's own messages
        if not any(genret):
            return await forward(POINTS, method, req.SerializeToString() if not principal.admin else request)
        if method == "QueryGroups":
            raise errors.Unimplemented("QueryGroups with a genret Document is not supported; use Query")
        if any(q.collection_name != self.collection for q in queries) or req.collection_name != self.collection:
            raise errors.NotFound(f"collection '{req.collection_name}' has no genret index here "
                                  f"(this sidecar serves '{self.collection}')")
        t0 = time.perf_counter()
        results = await asyncio.gather(*(self._plan(principal, forward, context).run(q) if g
                                         else self._forwarded(q, forward) for q, g in zip(queries, genret, strict=True)))
        took = time.perf_counter() - t0
        if method == "Query":
            return qg.QueryResponse(result=results[0], time=took).SerializeToString()
        return qg.QueryBatchResponse(result=[qg.BatchResult(result=r) for r in results], time=took).SerializeToString()

    async def _forwarded(self, q: qg.QueryPoints, forward: Forward
                         ) -> list[qg.ScoredPoint]:
        return list(qg.QueryResponse.FromString(await forward(POINTS, "Query", q.SerializeToString())).result)

    def _plan(self, principal: Principal, forward: Forward,
              context: grpc.aio.ServicerContext) -> QueryPlan:
        async def query(q: qg.QueryPoints) -> list[qg.ScoredPoint]:
            return await self._forwarded(q, forward)

        async def leaf(doc: qg.Document, limit: int, flt: qg.Filter | None) -> list[Scored]:
            sets = self.tenant_sets(flt)
            if not sets:
                raise errors.InvalidArgument(
                    f"a genret query needs its tenant: a must match on '{self.tenant_key}' in the filter "
                    "(or a key bound to one tenant)")
            tenants = set.intersection(*sets)
            if not tenants:
                return []  # must be in tenant A and in tenant B: no point is
            if len(tenants) > 1:
                raise errors.InvalidArgument(f"the filter allows tenants {', '.join(sorted(tenants))}; a genret "
                                             f"query needs one (a MatchValue on '{self.tenant_key}')")
            tenant = next(iter(tenants))
            principal.check_tenant(tenant)
            access_log.note(tenant=tenant, mode="generative", query=doc.text)
            beams = doc.options[BEAM_OPTION].integer_value if BEAM_OPTION in doc.options else 0
            rest = GrpcToRest.convert_filter(flt).model_dump(mode="json", exclude_none=True) if flt is not None else None
            hits = await self.genret.generate(SearchQuery(tenant, doc.text, limit, int(beams), Mode.GENERATIVE,
                                                          filter=rest), context)
            if not hits:
                return []
            ids = [point_id(h.point_id) for h in hits]
            # decoding kept to the filter; Qdrant checks the hits again (a point changed since is dropped)
            kept = await self._matching(flt, ids, forward)
            return [(pid, h.score) for pid, h in zip(ids, hits, strict=True) if key_of(pid) in kept]

        async def fetch(ids: Sequence[qg.PointId], req: qg.QueryPoints) -> dict[Any, qg.RetrievedPoint]:
            if not ids:
                return {}
            get = qg.GetPoints(collection_name=self.collection, ids=list(ids),
                               with_payload=req.with_payload if req.HasField("with_payload")
                               else qg.WithPayloadSelector(enable=False))
            if req.HasField("with_vectors"):
                get.with_vectors.CopyFrom(req.with_vectors)
            got = qg.GetResponse.FromString(await forward(POINTS, "Get", get.SerializeToString()))
            return {key_of(r.id): r for r in got.result}

        return QueryPlan(self.collection, leaf, query, fetch)

    async def _get_own(self, request: bytes, principal: Principal,
                       forward: Forward) -> bytes:
        req = _parse(qg.GetPoints, request)
        self._own_collection(req.collection_name)
        owned = await self._owned(list(req.ids), principal.tenants, forward)
        kept = [pid for pid in req.ids if key_of(pid) in owned]
        del req.ids[:]
        req.ids.extend(kept)
        return await forward(POINTS, "Get", req.SerializeToString())

    async def _owned(self, ids: Sequence[qg.PointId], tenants: Iterable[str],
                     forward: Forward) -> set[Any]:
        return await self._matching(qg.Filter(must=[self._tenant_condition(tenants)]), ids, forward)

    async def _matching(self, flt: qg.Filter | None, ids: Sequence[qg.PointId],
                        forward: Forward) -> set[Any]:
        """Which of ``ids`` Qdrant finds under ``flt``."""
        if not ids:
            return set()
        check = qg.QueryPoints(collection_name=self.collection, filter=with_ids(flt, ids), limit=len(ids),
                               with_payload=qg.WithPayloadSelector(enable=False))
        return {key_of(p.id) for p in await self._forwarded(check, forward)}

    # --- writes --------------------------------------------------------------------------------
    async def _tenants_of(self, ids: Sequence[qg.PointId],
                          forward: Forward) -> dict[Any, str | None]:
        """Each existing point's tenant (None: a point with no tenant)."""
        out: dict[Any, str | None] = {}
        for s in range(0, len(ids), 1024):
            get = qg.GetPoints(collection_name=self.collection, ids=list(ids[s:s + 1024]),
                               with_payload=qg.WithPayloadSelector(
                                   include=qg.PayloadIncludeSelector(fields=[self.tenant_key])))
            for rec in qg.GetResponse.FromString(await forward(POINTS, "Get", get.SerializeToString())).result:
                out[key_of(rec.id)] = _keyword(rec.payload.get(self.tenant_key))
        return out

    async def _resolve(self, flt: qg.Filter, forward: Forward
                       ) -> list[qg.PointId]:
        """The ids of the points a filter selects (scrolled, ids only)."""
        out: list[qg.PointId] = []
        offset: qg.PointId | None = None
        while True:
            scroll = qg.ScrollPoints(collection_name=self.collection, filter=flt, limit=1024,
                                     with_payload=qg.WithPayloadSelector(enable=False))
            if offset is not None:
                scroll.offset.CopyFrom(offset)
            page = qg.ScrollResponse.FromString(await forward(POINTS, "Scroll", scroll.SerializeToString()))
            out.extend(r.id for r in page.result)
            if len(out) > MAX_RESOLVED:
                raise errors.InvalidArgument(f"the filter selects more than {MAX_RESOLVED} points; write them in "
                                             "smaller pieces")
            if not page.HasField("next_page_offset"):
                return out
            offset = page.next_page_offset

    async def _write(self, method: str, request: bytes, principal: Principal,
                     forward: Forward,
                     context: grpc.aio.ServicerContext) -> bytes:
        req = _parse(WRITES[method], request)
        if req.collection_name != self.collection:
            if not principal.admin:
                self._own_collection(req.collection_name)
            return await forward(POINTS, method, request)
        self.genret.check_writable()
        ops = self._operations(req) if method == "UpdateBatch" else [(method, req)]
        batch = method == "UpdateBatch"
        found: dict[Any, qg.PointId] = {}
        for name, msg in ops:
            for pid in await self._write_ids(name, msg, principal, forward, keep_filter=batch):
                found.setdefault(key_of(pid), pid)
        ids = list(found.values())
        before = await self._tenants_of(ids, forward)
        if not principal.admin:
            for name, msg in ops:
                self._check_tenant_write(name, msg, principal, ids, before)
        req.wait = True
        response = await forward(POINTS, method, req.SerializeToString())
        if batch:  # a later operation's filter is Qdrant's to apply after the earlier ones: follow both sides
            for name, msg in ops:
                for pid in await self._write_ids(name, msg, principal, forward, keep_filter=True):
                    found.setdefault(key_of(pid), pid)
            ids = list(found.values())
        after = await self._tenants_of(ids, forward)
        touched = sorted({t for t in (*before.values(), *after.values()) if t})
        names = [id_text(pid) for pid in ids]
        for tenant in touched:
            try:
                await self.genret.write(tenant, lambda t=tenant: self.genret.engine.sync(t, names), context)
            except errors.ResourceExhausted as exc:
                # Qdrant holds the write; its new points wait for `genret index --add` to be found generatively
                log.warning("front-door write to tenant '%s': %s", tenant, exc)
                context.set_trailing_metadata((("genret-unindexed", str(exc)),
                                               (access_log.REQUEST_ID, access_log.current_id() or "")))
        return response

    @staticmethod
    def _operations(req: qg.UpdateBatchPoints) -> list[tuple[str, Any]]:
        """An UpdateBatch's operations as the single writes they are: (method, its message)."""
        out = []
        for i, op in enumerate(req.operations):
            kind = op.WhichOneof("operation")
            if kind not in BATCH_OPERATIONS:
                raise errors.Unimplemented(f"operations[{i}]: '{kind}' is not supported on the collection genret "
                                           "serves (use delete_points or clear_payload)")
            out.append((BATCH_OPERATIONS[kind], getattr(op, kind)))
        return out

    async def _write_ids(self, method: str, req: Any, principal: Principal, forward: Forward,
                         keep_filter: bool = False) -> list[qg.PointId]:
        """The points a write touches; a selector by filter is replaced by the ids it selects now (unless
        ``keep_filter``: then it only gets a tenant key's condition)."""
        if method in ("Upsert", "UpdateVectors"):
            return [p.id for p in req.points]
        field = SELECTOR_FIELD[method]
        selector: qg.PointsSelector = getattr(req, field)
        if selector.WhichOneof("points_selector_one_of") == "filter":
            flt = qg.Filter()
            flt.CopyFrom(selector.filter)
            if not principal.admin:
                named = self.tenants_named(flt)
                for t in named:
                    principal.check_tenant(t)
                flt.must.append(self._tenant_condition(named or principal.tenants))
            ids = await self._resolve(flt, forward)
            # the write touches exactly the points genret follows (no point selected: the filter stays)
            getattr(req, field).CopyFrom(qg.PointsSelector(points=qg.PointsIdsList(ids=ids)) if ids and not keep_filter
                                         else qg.PointsSelector(filter=flt))
            return ids
        return list(selector.points.ids)

    def _check_tenant_write(self, method: str, req: Any, principal: Principal, ids: Sequence[qg.PointId],
                            before: dict[Any, str | None]) -> None:
        """A tenant key writes only its own points and leaves them in its tenants."""
        for pid in ids:
            key = key_of(pid)
            if key in before and before[key] not in principal.tenants:
                raise errors.PermissionDenied(f"key '{principal.name}' may not write point {id_text(pid)}")
        if method == "Upsert":
            for p in req.points:
                principal.check_tenant(_keyword(p.payload.get(self.tenant_key)) or "")
        elif method in ("SetPayload", "OverwritePayload"):
            if req.HasField("key"):
                raise errors.PermissionDenied("a nested payload key through the front door needs an admin key")
            named = _keyword(req.payload.get(self.tenant_key)) if self.tenant_key in req.payload else None
            if named is not None or method == "OverwritePayload":
                principal.check_tenant(named or "")
        elif method == "DeletePayload" and self.tenant_key in req.keys:
            raise errors.PermissionDenied(f"a tenant key may not delete the '{self.tenant_key}' field")
        elif method == "ClearPayload":
            raise errors.PermissionDenied("ClearPayload through the front door needs an admin key")


__all__ = ["QdrantDoor", "SERVICES", "genret_text", "id_text", "point_id"]

"""Qdrant as the system of record: load documents, scroll them, write docids, hydrate hits, dense search.

Every call made on behalf of a tenant is scoped to it: searches and scrolls carry that tenant's payload
filter, and reads by point id keep only points whose payload names the tenant (by-id reads cost O(ids),
where a filtered scroll is a full scan in embedded mode). Isolation never depends on the caller, on shard
keys or on the embedded mode's behaviour.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from qdrant_client import QdrantClient, models

from genret import tracing
from genret.config import Config
from genret.errors import InvalidArgument, Unavailable
from genret.metrics import QDRANT_SECONDS
from genret.names import check_doc_id, check_tenant
from genret.store.wire import EmbeddedUpstream, ServerUpstream, Upstream
from genret.turns import TurnLock
from genret.types import PointId

DOCID_KEY = "genret_docid"  # the default payload field of docids (``Config.docid_key``)
DOC_ID_KEY = "doc_id"
TEXT_HASH_KEY = "genret_text_hash"  # a hash of the title and text genret last saw written (``text_hash``)
VECTOR_NAME = "dense"
MAX_FILTER_IDS = 10_000  # point ids one filter's has_id conditions may list
RETRY_AFTER_S = 1.0  # after Qdrant fails, calls fail at once for this long; the next one tries again
_POINT_NAMESPACE = uuid.UUID("6f1c1f4e-9d55-4a0b-9c51-0d2f2b6f3a11")



def qdrant_client_version() -> str:
    """The installed qdrant-client's version (recorded in index manifests)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("qdrant-client")
    except PackageNotFoundError:  # pragma: no cover - metadata missing in odd installs
        return "unknown"


def qdrant_id(pid: PointId) -> int | str:
    """A point id as Qdrant takes it: genret carries ids as strings, Qdrant's unsigned integers as digits."""
    return int(pid) if pid.isdigit() else pid


def _where(loc: Sequence[Any]) -> str:
    """A pydantic error location as a person reads it: ``must[0].range``, union branches left out."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif "[" not in str(part) and not str(part)[:1].isupper():
            out += f".{part}" if out else str(part)
    return out or "filter"


def _has_ids(value: Any) -> int:
    if isinstance(value, dict):
        return sum(len(v) if k == "has_id" and isinstance(v, list) else _has_ids(v) for k, v in value.items())
    if isinstance(value, list):
        return sum(_has_ids(v) for v in value)
    return 0


def parse_filter(raw: dict[str, Any]) -> models.Filter:
    """A filter in Qdrant's model (as its REST API writes it), checked; INVALID_ARGUMENT says what is wrong."""
    if _has_ids(raw) > MAX_FILTER_IDS:
        raise InvalidArgument(f"the filter's has_id conditions list {_has_ids(raw)} point ids; the limit is "
                              f"{MAX_FILTER_IDS}")
    try:
        return models.Filter.model_validate(raw)
    except ValueError as exc:
        errors: list[dict[str, Any]] = getattr(exc, "errors", lambda: [])()
        deepest = max((len(e.get("loc", ())) for e in errors), default=0)  # the union branch that got furthest
        picked = [e for e in errors if len(e.get("loc", ())) == deepest]
        picked = [e for e in picked if e.get("type") == "extra_forbidden"] or picked
        reasons = list(dict.fromkeys(f"{_where(e.get('loc', ()))}: {e.get('msg')}" for e in picked))[:3]
        raise InvalidArgument(f"bad filter: {'; '.join(reasons) or exc}") from exc


def _refused_by_server(exc: Exception) -> bool:
    """A Qdrant server answered, refusing the request (a 4xx): Qdrant itself is up."""
    status = getattr(exc, "status_code", None)
    return isinstance(status, int) and 400 <= status < 500


def point_id_for(tenant: str, doc_id: str) -> PointId:
    """A stable Qdrant point id (UUID5) for a tenant's document id. Neither may hold a control character
    (``genret.names``), so the NUL that joins them is unambiguous: no two pairs share a point id."""
    return str(uuid.uuid5(_POINT_NAMESPACE, f"{check_tenant(tenant)}\x00{check_doc_id(doc_id)}"))


@dataclass(frozen=True)
class StoredDoc:
    point_id: PointId
    tenant: str
    doc_id: str
    title: str
    text: str
    docid: str | None
    vector: np.ndarray | None
    text_hash: str | None = None  # TEXT_HASH_KEY as stored


def text_hash(title: str, text: str) -> str:
    """What TEXT_HASH_KEY holds for a point with this title and text: a read replica compares these to
    learn which tenants' texts changed without reading the texts."""
    return hashlib.blake2b(f"{title}\0{text}".encode(), digest_size=8).hexdigest()


@dataclass(frozen=True)
class DenseHit:
    point_id: PointId
    score: float
    payload: dict[str, Any]


class QdrantStore:
    """The sidecar's only door to Qdrant: embedded (local path) by default, a server with ``qdrant_url``."""

    def __init__(self, config: Config, client: QdrantClient | None = None) -> None:
        self.config = config
        self.collection = config.collection
        if client is not None:
            self.client = client
        elif config.qdrant_url:
            self.client = QdrantClient(url=config.qdrant_url, api_key=config.qdrant_api_key or None)
        else:
            self.client = QdrantClient(path=config.qdrant_path)
        self.embedded = not config.qdrant_url  # the embedded Qdrant (a local path), not a server
        # The embedded client is not safe for concurrent use (a server client is): calls take turns, in the
        # order they arrive, so one tenant's long run of calls cannot keep another's waiting.
        self._lock = TurnLock() if self.embedded else None
        self._has_vectors: bool | None = None
        self.docid_key = config.docid_key  # the payload field holding each point's docid
        self._failed: tuple[float, str] | None = None  # (when, why) of the last failure while Qdrant is down

    def close(self) -> None:
        self.client.close()

    def upstream(self) -> Upstream:
        """Qdrant's gRPC API for the front door: the server's port, or the embedded Qdrant taking turns
        with this store's own calls."""
        if not self.embedded:
            return ServerUpstream(self.config.qdrant_url, self.config.qdrant_api_key, self.config.qdrant_grpc_port)
        return EmbeddedUpstream(self.client, self._lock)

    def check_available(self) -> None:
        """Unavailable at once while Qdrant is known to be down: for ``RETRY_AFTER_S`` after a failed call
        every call fails without waiting on Qdrant; the first one after that tries again."""
        failed = self._failed
        if failed is not None and time.monotonic() - failed[0] < RETRY_AFTER_S:
            raise Unavailable(f"Qdrant is unavailable ({failed[1]}); retry shortly")

    def ping(self) -> bool:
        """Whether Qdrant answers now (a cheap collection lookup that bypasses the fast failure)."""
        self._failed = None
        try:
            self.exists()
        except Unavailable:
            return False
        return True

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        name, outcome, t0 = getattr(fn, "__name__", "call"), "ok", time.perf_counter()
        try:
            self.check_available()
            with tracing.span(f"qdrant.{name}"):
                if self._lock is None:
                    result = fn(*args, **kwargs)
                else:
                    with self._lock:
                        result = fn(*args, **kwargs)
            self._failed = None
            return result
        except (ValueError, KeyError):
            outcome = "refused"
            raise
        except Unavailable:
            outcome = "unavailable"
            raise
        except Exception as exc:  # network or server failure
            outcome = "unavailable"
            if not _refused_by_server(exc):  # one caller's bad request must not fail every tenant's calls
                self._failed = (time.monotonic(), f"{name}: {exc}")
            raise Unavailable(f"Qdrant call {name} failed: {exc}") from exc
        finally:
            QDRANT_SECONDS.labels(name, outcome).observe(time.perf_counter() - t0)

    # --- filters -------------------------------------------------------------------------------
    def tenant_filter(self, tenant: str, *extra: models.Condition | models.Filter) -> models.Filter:
        cond = models.FieldCondition(key=self.config.tenant_key, match=models.MatchValue(value=tenant))
        return models.Filter(must=[cond, *extra])

    # --- collection ----------------------------------------------------------------------------
    def exists(self) -> bool:
        return bool(self._call(self.client.collection_exists, self.collection))

    def ensure_collection(self, vector_size: int | None) -> None:
        """Create the collection if it does not exist yet, with payload indexes on a Qdrant server (the embedded
        Qdrant has none: it would only warn that they do nothing)."""
        if self.exists():
            return
        vectors = ({VECTOR_NAME: models.VectorParams(size=vector_size, distance=models.Distance.COSINE)}
                   if vector_size else {})
        self._call(self.client.create_collection, self.collection, vectors_config=vectors)
        if self.embedded:
            return
        self._call(self.client.create_payload_index, self.collection, self.config.tenant_key,
                   field_schema=models.KeywordIndexParams(type=models.KeywordIndexType.KEYWORD, is_tenant=True))
        self._call(self.client.create_payload_index, self.collection, self.docid_key,
                   field_schema=models.PayloadSchemaType.KEYWORD)

    def drop_collection(self) -> None:
        self._call(self.client.delete_collection, self.collection)
        self._has_vectors = None

    def has_vectors(self) -> bool:
        """Whether the collection has the named dense vector (cached: a collection's schema is fixed)."""
        if self._has_vectors is None:
            info = self._call(self.client.get_collection, self.collection)
            vectors = info.config.params.vectors
            self._has_vectors = isinstance(vectors, dict) and VECTOR_NAME in vectors
        return self._has_vectors

    def upsert_documents(self, tenant: str, docs: Sequence[tuple[str, str, str]], vectors: np.ndarray | None,
                         batch_size: int = 256, docids: Sequence[str] | None = None,
                         batch_chars: int = 250_000,
                         extras: Sequence[tuple[dict[str, Any], dict[str, list[float]]]] | None = None
                         ) -> list[PointId]:
        """Write (doc_id, title, text) documents of one tenant (with their docids, when given); returns
        their point ids. Point ids derive from tenant and document id, so no tenant can touch another's.
        ``extras`` gives each document more payload fields and the caller's own vectors by name ("": the
        unnamed vector); genret's own fields win a clash. Each Qdrant call carries at most ``batch_size``
        points and, past the first, ``batch_chars`` characters."""
        ids = [point_id_for(tenant, d[0]) for d in docs]
        points: list[models.PointStruct] = []
        chars = 0
        for i, (doc_id, title, text) in enumerate(docs):
            if points and (len(points) >= batch_size or chars + len(title) + len(text) > batch_chars):
                self._call(self.client.upsert, self.collection, points=points, wait=True)
                points, chars = [], 0
            extra_payload, own_vectors = extras[i] if extras is not None else ({}, {})
            payload = {**extra_payload, self.config.tenant_key: tenant, DOC_ID_KEY: doc_id,
                       self.config.title_key: title, self.config.text_key: text, TEXT_HASH_KEY: text_hash(title, text)}
            if docids is not None:
                payload[self.docid_key] = docids[i]
            vec: Any = {**own_vectors, **({VECTOR_NAME: vectors[i].tolist()} if vectors is not None else {})}
            if "" in vec:
                if len(vec) > 1:
                    raise ValueError("a document's unnamed vector cannot go with named ones")
                vec = vec[""]
            points.append(models.PointStruct(id=ids[i], vector=vec, payload=payload))
            chars += len(title) + len(text)
        if points:
            self._call(self.client.upsert, self.collection, points=points, wait=True)
        return ids

    # --- reads ---------------------------------------------------------------------------------
    def tenants(self) -> list[str]:
        """Every tenant value present in the collection (one pass over payloads)."""
        seen: set[str] = set()
        for rec in self._scroll(None, [self.config.tenant_key], with_vectors=False):
            value = (rec.payload or {}).get(self.config.tenant_key)
            if isinstance(value, str):
                seen.add(value)
        return sorted(seen)

    def scroll_tenant(self, tenant: str, with_vectors: bool = False) -> Iterator[StoredDoc]:
        """All documents of one tenant, tenant filter applied."""
        keys = [self.config.tenant_key, DOC_ID_KEY, self.config.title_key, self.config.text_key, self.docid_key]
        for rec in self._scroll(self.tenant_filter(tenant), keys, with_vectors=with_vectors):
            yield self._to_doc(rec)

    def count_tenant(self, tenant: str) -> int:
        """How many points the tenant has (an exact count; nothing is read)."""
        return int(self._call(self.client.count, self.collection, count_filter=self.tenant_filter(tenant)).count)

    def docids_of_tenant(self, tenant: str) -> list[tuple[PointId, str]]:
        """(point id, docid) for the tenant's points that carry a docid."""
        out = []
        for rec in self._scroll(self.tenant_filter(tenant), [self.docid_key, self.config.tenant_key], with_vectors=False):
            payload = rec.payload or {}
            if payload.get(self.config.tenant_key) != tenant:  # defence in depth
                continue
            docid = payload.get(self.docid_key)
            if isinstance(docid, str) and docid:
                out.append((str(rec.id), docid))
        return out

    def _scroll(self, flt: models.Filter | None, keys: list[str], with_vectors: bool,
                page: int = 4096) -> Iterator[models.Record]:
        offset = None
        while True:
            records, offset = self._call(
                self.client.scroll, self.collection, scroll_filter=flt, limit=page, offset=offset,
                with_payload=keys or False, with_vectors=[VECTOR_NAME] if with_vectors else False)
            yield from records
            if offset is None:
                return

    def _to_doc(self, rec: models.Record) -> StoredDoc:
        p = rec.payload or {}
        vec = None
        if isinstance(rec.vector, dict) and VECTOR_NAME in rec.vector:
            vec = np.asarray(rec.vector[VECTOR_NAME], dtype=np.float32)
        return StoredDoc(str(rec.id), str(p.get(self.config.tenant_key, "")), str(p.get(DOC_ID_KEY, rec.id)),
                         str(p.get(self.config.title_key) or ""), str(p.get(self.config.text_key) or ""),
                         p.get(self.docid_key), vec, p.get(TEXT_HASH_KEY))

    def _owned(self, tenant: str, ids: Sequence[PointId], with_payload: bool | list[str],
               with_vectors: bool) -> list[models.Record]:
        """Points fetched by id, keeping only those whose payload names ``tenant``.

        A lookup by id costs O(ids) on servers and in embedded mode alike (a filtered scroll scans every
        point in embedded mode); the tenant check on each returned payload keeps isolation.
        """
        if not ids:
            return []
        keys: bool | list[str] = with_payload if with_payload is True else \
            sorted({self.config.tenant_key, *(with_payload or [])})
        records = self._call(self.client.retrieve, self.collection, ids=[qdrant_id(i) for i in ids], with_payload=keys,
                             with_vectors=[VECTOR_NAME] if with_vectors else False)
        return [r for r in records if (r.payload or {}).get(self.config.tenant_key) == tenant]

    def hydrate(self, tenant: str, ids: Sequence[PointId], with_payload: bool) -> dict[PointId, dict[str, Any]]:
        """Payloads of the given points that belong to ``tenant`` (others are silently absent)."""
        return {str(r.id): (r.payload or {}) if with_payload else {}
                for r in self._owned(tenant, ids, True if with_payload else [], False)}

    def retrieve(self, tenant: str, ids: Sequence[PointId], with_vectors: bool = False) -> dict[PointId, StoredDoc]:
        """The given points that belong to ``tenant``, as documents (others are silently absent)."""
        return {str(r.id): self._to_doc(r) for r in self._owned(tenant, ids, True, with_vectors)}

    def docids_by_tenant(self) -> dict[str, list[tuple[PointId, str]]]:
        """Every point's (tenant, docid) in one pass over the collection: how namespaces are rebuilt."""
        return self.docids_and_texts_by_tenant()[0]

    def docids_and_texts_by_tenant(self) -> tuple[dict[str, list[tuple[PointId, str]]], dict[str, int]]:
        """``docids_by_tenant`` and, from the same pass, a digest of each tenant's points and text hashes
        (equal digests: the same points with the same texts), so a read replica learns whose texts changed.
        A point without a hash (written straight to Qdrant, through neither door) has its title and text
        read and hashed here: what this costs beyond the scroll grows with such points only. Digests
        compare within one process (Python's string hash)."""
        out: dict[str, list[tuple[PointId, str]]] = {}
        digests: dict[str, int] = {}
        unhashed: dict[str, list[PointId]] = {}
        fields = [self.config.tenant_key, self.docid_key, TEXT_HASH_KEY]
        for rec in self._scroll(None, fields, with_vectors=False, page=20_000):
            payload = rec.payload or {}
            tenant, docid = payload.get(self.config.tenant_key), payload.get(self.docid_key)
            if not (isinstance(tenant, str) and tenant):
                continue
            digests.setdefault(tenant, 0)
            known = payload.get(TEXT_HASH_KEY)
            if isinstance(known, str):
                digests[tenant] ^= hash((str(rec.id), known))
            else:
                unhashed.setdefault(tenant, []).append(str(rec.id))
            if isinstance(docid, str) and docid:
                out.setdefault(tenant, []).append((str(rec.id), docid))
        for tenant, ids in unhashed.items():
            for pid, h in self._text_hashes(tenant, ids):
                digests[tenant] ^= hash((pid, h))
        return out, digests

    def _text_hashes(self, tenant: str, ids: Sequence[PointId], batch: int = 1024) -> Iterator[tuple[PointId, str]]:
        """``text_hash`` of each of the tenant's points among ``ids``, from their title and text as stored."""
        keys = [self.config.title_key, self.config.text_key]
        for s in range(0, len(ids), batch):
            for doc in map(self._to_doc, self._owned(tenant, ids[s : s + batch], keys, False)):
                yield doc.point_id, text_hash(doc.title, doc.text)

    def matching(self, tenant: str, flt: models.Filter) -> set[PointId]:
        """The tenant's points that match ``flt`` (ids only, paged)."""
        return {str(r.id) for r in self._scroll(self.tenant_filter(tenant, flt), [], with_vectors=False)}

    def dense_search(self, tenant: str, vector: np.ndarray, limit: int, with_payload: bool,
                     only: Sequence[PointId] | None = None, flt: models.Filter | None = None) -> list[DenseHit]:
        """Qdrant's nearest neighbours of ``vector`` in ``tenant`` (and ``flt``, ANDed with the tenant's);
        with ``only``, Qdrant scores just those points: a prefetch selects them (a has_id condition next to
        the tenant filter) and the query ranks what it returns, which is how generative candidates are
        rescored."""
        extra = (flt,) if flt is not None else ()
        if only is None:
            stage: dict[str, Any] = {"query_filter": self.tenant_filter(tenant, *extra)}
        else:
            picked = self.tenant_filter(tenant, models.HasIdCondition(has_id=[qdrant_id(i) for i in only]), *extra)
            stage = {"prefetch": models.Prefetch(filter=picked, limit=max(1, len(only)))}
        res = self._call(self.client.query_points, self.collection, query=vector.tolist(), using=VECTOR_NAME,
                         limit=limit, with_payload=True, **stage)
        hits = []
        for p in res.points:
            payload = p.payload or {}
            if payload.get(self.config.tenant_key) != tenant:  # defence in depth
                continue
            hits.append(DenseHit(str(p.id), float(p.score), payload if with_payload else {}))
        return hits

    # --- writes --------------------------------------------------------------------------------
    def delete_points(self, tenant: str, ids: Sequence[PointId]) -> None:
        """Delete the given points of ``tenant``; points of other tenants among ``ids`` are left alone."""
        owned = [r.id for r in self._owned(tenant, ids, [], False)]
        if owned:
            self._call(self.client.delete, self.collection, points_selector=models.PointIdsList(points=owned),
                       wait=True)

    def write_docids(self, tenant: str, assignments: Sequence[tuple[PointId, str]],
                     text_hashes: Sequence[tuple[PointId, str]] = (), batch_size: int = 256) -> None:
        """Store each point's docid, and each of ``text_hashes``' points its ``text_hash``, in its payload.

        Per batch, one tenant-filtered read confirms that every point belongs to ``tenant``; only then are
        the payloads written by id (a per-point filtered write costs a collection scan each in embedded
        mode). A point outside the tenant aborts the batch before anything in it is written.
        """
        fields: dict[PointId, dict[str, str]] = {}
        for pid, docid in assignments:
            fields.setdefault(pid, {})[self.docid_key] = docid
        for pid, h in text_hashes:
            fields.setdefault(pid, {})[TEXT_HASH_KEY] = h
        payloads = list(fields.items())
        for s in range(0, len(payloads), batch_size):
            batch = payloads[s : s + batch_size]
            ids = [pid for pid, _ in batch]
            owned = self.hydrate(tenant, ids, with_payload=False)
            foreign = [pid for pid in ids if pid not in owned]
            if foreign:
                raise ValueError(f"{len(foreign)} point(s) are not in tenant '{tenant}', e.g. {foreign[0]}")
            ops = [models.SetPayloadOperation(set_payload=models.SetPayload(payload=payload, points=[qdrant_id(pid)]))
                   for pid, payload in batch]
            self._call(self.client.batch_update_points, self.collection, update_operations=ops, wait=True)

"""Python clients for the sidecar: sync and async, typed results in the shape qdrant-client users know.

``query`` returns ``ScoredPoint``s (id, score, payload, plus docid, retriever, sources and calibrated
probability). Retries, backoff, waiting and load balancing are gRPC's own, set by a service config
(``service_config``), the same for the sync and the async client:

* each call has a deadline (``timeout_s``);
* a call answered UNAVAILABLE is retried by gRPC (``retries`` more attempts, at most 4, exponential backoff
  from ``backoff_s``) while the deadline allows;
* with ``wait_for_ready`` (the default) a call made while no sidecar is reachable (one restarting) waits
  for one until its deadline instead of failing at once; reconnection is tried every 0.2 s to 2 s;
* ``target`` may list several sidecars (``"10.0.0.1:50051,10.0.0.2:50051"``, IP addresses) or name a DNS
  host with several addresses; calls are spread over them round-robin.

Every other status is raised at once as ``grpc.RpcError``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
from google.protobuf.json_format import MessageToDict

from genret.v1 import genret_pb2 as pb
from genret.v1 import genret_pb2_grpc as pb_grpc

MODES = {"generative": pb.SEARCH_MODE_GENERATIVE, "dense": pb.SEARCH_MODE_DENSE,
         "hybrid": pb.SEARCH_MODE_HYBRID, "auto": pb.SEARCH_MODE_AUTO}
FUSIONS = {"default": pb.FUSION_UNSPECIFIED, "rrf": pb.FUSION_RRF, "dbsf": pb.FUSION_DBSF,
           "learned": pb.FUSION_LEARNED, "rescore": pb.FUSION_RESCORE, "weighted": pb.FUSION_WEIGHTED}
T = TypeVar("T")


@dataclass(frozen=True)
class Source:
    retriever: str
    rank: int
    score: float


@dataclass(frozen=True)
class ScoredPoint:
    id: str
    score: float
    payload: dict[str, Any]
    docid: str = ""
    retriever: str = ""
    sources: tuple[Source, ...] = field(default_factory=tuple)
    probability: float | None = None


def points_from(resp: pb.SearchResponse) -> list[ScoredPoint]:
    return [ScoredPoint(h.point_id, h.score, MessageToDict(h.payload) if h.HasField("payload") else {}, h.docid,
                        h.retriever, tuple(Source(s.retriever, s.rank, s.score) for s in h.sources),
                        h.probability if h.HasField("probability") else None) for h in resp.hits]


def search_request(tenant: str, query: str, limit: int = 10, mode: str = "generative", fusion: str = "default",
                   beam_size: int = 0, with_payload: bool = True, score_threshold: float | None = None,
                   min_probability: float | None = None, filter: dict[str, Any] | None = None,
                   lexical: bool = True, feedback: float | None = None) -> pb.SearchRequest:
    """``filter``: Qdrant's filter model as its REST API writes it (applied inside decoding); ``lexical``:
    whether HYBRID and AUTO fuse the tenant's BM25 list too; ``feedback``: the weight of pseudo-relevance
    feedback on the generative list (None: the server's)."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; valid: {', '.join(MODES)}")
    if fusion not in FUSIONS:
        raise ValueError(f"unknown fusion {fusion!r}; valid: {', '.join(FUSIONS)}")
    req = pb.SearchRequest(tenant=tenant, query=query, top_k=limit, beam_size=beam_size, mode=MODES[mode],
                           fusion=FUSIONS[fusion], with_payload=with_payload, without_lexical=not lexical)
    if score_threshold is not None:
        req.score_threshold = score_threshold
    if min_probability is not None:
        req.min_probability = min_probability
    if filter is not None:
        req.filter.update(filter)
    if feedback is not None:
        req.feedback = feedback
    return req


def upsert_request(tenant: str, docs: Sequence[tuple[str, str, str]]) -> pb.UpsertRequest:
    return pb.UpsertRequest(tenant=tenant, documents=[pb.Document(id=i, title=t, text=x) for i, t, x in docs])


SERVICE = pb.DESCRIPTOR.services_by_name["GenRet"].full_name
MAX_ATTEMPTS = 5  # gRPC's own cap on attempts per call


def service_config(retries: int, backoff_s: float, wait_for_ready: bool) -> str:
    """The gRPC service config of both clients: round-robin over the target's addresses, UNAVAILABLE retried."""
    return json.dumps({
        "loadBalancingConfig": [{"round_robin": {}}],
        "methodConfig": [{
            "name": [{"service": SERVICE}],
            "waitForReady": wait_for_ready,
            "retryPolicy": {"maxAttempts": max(2, min(MAX_ATTEMPTS, retries + 1)),
                            "initialBackoff": f"{max(backoff_s, 0.001):.3f}s", "maxBackoff": "5s",
                            "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]}}]})


def _channel_args(target: str, tls_ca: str, retries: int, backoff_s: float,
                  wait_for_ready: bool) -> tuple[str, grpc.ChannelCredentials | None, list[tuple[str, Any]]]:
    """The channel target (``ipv4:`` for a list of addresses), credentials and options."""
    if "," in target and not target.startswith(("ipv4:", "ipv6:", "dns:", "unix:")):
        target = "ipv4:" + target  # several host:port addresses: gRPC's static resolver
    creds = grpc.ssl_channel_credentials(root_certificates=Path(tls_ca).read_bytes()) if tls_ca else None
    options = [("grpc.service_config", service_config(retries, backoff_s, wait_for_ready)),
               ("grpc.enable_retries", 1), ("grpc.initial_reconnect_backoff_ms", 200),
               ("grpc.min_reconnect_backoff_ms", 200), ("grpc.max_reconnect_backoff_ms", 2000)]
    return target, creds, options


class GenretClient:
    """Sync client. ``api_key`` goes out as ``x-api-key`` metadata; ``tls_ca`` (PEM path) turns on TLS."""

    def __init__(self, target: str, timeout_s: float = 30.0, api_key: str = "", tls_ca: str = "",
                 retries: int = 3, backoff_s: float = 0.2, wait_for_ready: bool = True) -> None:
        target, creds, options = _channel_args(target, tls_ca, retries, backoff_s, wait_for_ready)
        self.channel = (grpc.secure_channel(target, creds, options) if creds
                        else grpc.insecure_channel(target, options))
        self.stub = pb_grpc.GenRetStub(self.channel)
        self.timeout_s = timeout_s
        self._metadata = (("x-api-key", api_key),) if api_key else ()

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> GenretClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: Callable[..., T], request: Any) -> T:
        return method(request, timeout=self.timeout_s, metadata=self._metadata)

    def query(self, tenant: str, query: str, limit: int = 10, mode: str = "generative", **kw: Any) -> list[ScoredPoint]:
        return points_from(self._call(self.stub.Search, search_request(tenant, query, limit, mode, **kw)))

    def search(self, tenant: str, query: str, top_k: int = 10, beam_size: int = 0, mode: str = "generative",
               with_payload: bool = True, score_threshold: float | None = None,
               fusion: str = "default") -> pb.SearchResponse:
        """The raw protobuf response (``query`` is the typed form)."""
        return self._call(self.stub.Search, search_request(tenant, query, top_k, mode, fusion, beam_size,
                                                           with_payload, score_threshold))

    def search_batch(self, tenant: str, queries: Sequence[str], top_k: int = 10,
                     mode: str = "generative") -> pb.SearchBatchResponse:
        reqs = [search_request(tenant, q, top_k, mode) for q in queries]
        return self._call(self.stub.SearchBatch, pb.SearchBatchRequest(requests=reqs))

    def info(self, tenant: str = "") -> pb.IndexInfo:
        return self._call(self.stub.GetIndexInfo, pb.GetIndexInfoRequest(tenant=tenant))

    def upsert(self, tenant: str, docs: Sequence[tuple[str, str, str]]) -> pb.UpsertResponse:
        """docs: (id, title, text)."""
        return self._call(self.stub.UpsertDocuments, upsert_request(tenant, docs))

    def delete(self, tenant: str, ids: Sequence[str]) -> pb.DeleteResponse:
        return self._call(self.stub.DeleteDocuments, pb.DeleteRequest(tenant=tenant, ids=list(ids)))

    def reload_keys(self) -> pb.ReloadKeysResponse:
        return self._call(self.stub.ReloadKeys, pb.ReloadKeysRequest())


class AsyncGenretClient:
    """The same calls for asyncio applications (grpc.aio)."""

    def __init__(self, target: str, timeout_s: float = 30.0, api_key: str = "", tls_ca: str = "",
                 retries: int = 3, backoff_s: float = 0.2, wait_for_ready: bool = True) -> None:
        target, creds, options = _channel_args(target, tls_ca, retries, backoff_s, wait_for_ready)
        self.channel = (grpc.aio.secure_channel(target, creds, options) if creds
                        else grpc.aio.insecure_channel(target, options))
        self.stub = pb_grpc.GenRetStub(self.channel)
        self.timeout_s = timeout_s
        self._metadata = (("x-api-key", api_key),) if api_key else ()

    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self) -> AsyncGenretClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _call(self, method: Callable[..., Awaitable[T]], request: Any) -> T:
        return await method(request, timeout=self.timeout_s, metadata=self._metadata)

    async def query(self, tenant: str, query: str, limit: int = 10, mode: str = "generative",
                    **kw: Any) -> list[ScoredPoint]:
        return points_from(await self._call(self.stub.Search, search_request(tenant, query, limit, mode, **kw)))

    async def upsert(self, tenant: str, docs: Sequence[tuple[str, str, str]]) -> pb.UpsertResponse:
        return await self._call(self.stub.UpsertDocuments, upsert_request(tenant, docs))

    async def delete(self, tenant: str, ids: Sequence[str]) -> pb.DeleteResponse:
        return await self._call(self.stub.DeleteDocuments, pb.DeleteRequest(tenant=tenant, ids=list(ids)))


def format_hits(resp: pb.SearchResponse, text_key: str = "title", width: int = 90) -> str:
    lines = []
    for rank, h in enumerate(resp.hits, 1):
        payload = MessageToDict(h.payload) if h.HasField("payload") else {}
        label = str(payload.get(text_key) or payload.get("text") or "")[:width]
        lines.append(f"  {rank:>2}. {h.score:8.3f}  docid={h.docid or '-':<12} doc={payload.get('doc_id', '?'):<6} {label}")
    return "\n".join(lines) if lines else "  (no hits)"

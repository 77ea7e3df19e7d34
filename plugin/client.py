"""A small gRPC client for the sidecar (used by `genret search` and the demo)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import grpc
from google.protobuf.json_format import MessageToDict

from genret.v1 import genret_pb2 as pb
from genret.v1 import genret_pb2_grpc as pb_grpc

MODES = {"generative": pb.SEARCH_MODE_GENERATIVE, "dense": pb.SEARCH_MODE_DENSE,
         "hybrid": pb.SEARCH_MODE_HYBRID, "auto": pb.SEARCH_MODE_AUTO}


class GenretClient:
    """Sync client. ``api_key`` goes out as ``x-api-key`` metadata; ``tls_ca`` (PEM path) turns on TLS."""

    def __init__(self, target: str, timeout_s: float = 30.0, api_key: str = "", tls_ca: str = "") -> None:
        if tls_ca:
            creds = grpc.ssl_channel_credentials(root_certificates=Path(tls_ca).read_bytes())
            self.channel = grpc.secure_channel(target, creds)
        else:
            self.channel = grpc.insecure_channel(target)
        self.stub = pb_grpc.GenRetStub(self.channel)
        self.timeout_s = timeout_s
        self._metadata = (("x-api-key", api_key),) if api_key else ()

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> GenretClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def search(self, tenant: str, query: str, top_k: int = 10, beam_size: int = 0, mode: str = "generative",
               with_payload: bool = True, score_threshold: float | None = None) -> pb.SearchResponse:
        req = pb.SearchRequest(tenant=tenant, query=query, top_k=top_k, beam_size=beam_size, mode=MODES[mode],
                               with_payload=with_payload)
        if score_threshold is not None:
            req.score_threshold = score_threshold
        return self.stub.Search(req, timeout=self.timeout_s, metadata=self._metadata)

    def search_batch(self, tenant: str, queries: Sequence[str], top_k: int = 10,
                     mode: str = "generative") -> pb.SearchBatchResponse:
        reqs = [pb.SearchRequest(tenant=tenant, query=q, top_k=top_k, mode=MODES[mode]) for q in queries]
        return self.stub.SearchBatch(pb.SearchBatchRequest(requests=reqs), timeout=self.timeout_s,
                                     metadata=self._metadata)

    def info(self, tenant: str = "") -> pb.IndexInfo:
        return self.stub.GetIndexInfo(pb.GetIndexInfoRequest(tenant=tenant), timeout=self.timeout_s,
                                      metadata=self._metadata)

    def upsert(self, tenant: str, docs: Sequence[tuple[str, str, str]]) -> pb.UpsertResponse:
        """docs: (id, title, text)."""
        req = pb.UpsertRequest(tenant=tenant, documents=[pb.Document(id=i, title=t, text=x) for i, t, x in docs])
        return self.stub.UpsertDocuments(req, timeout=self.timeout_s, metadata=self._metadata)

    def delete(self, tenant: str, ids: Sequence[str]) -> pb.DeleteResponse:
        return self.stub.DeleteDocuments(pb.DeleteRequest(tenant=tenant, ids=list(ids)), timeout=self.timeout_s,
                                         metadata=self._metadata)

    def reload_keys(self) -> pb.ReloadKeysResponse:
        return self.stub.ReloadKeys(pb.ReloadKeysRequest(), timeout=self.timeout_s, metadata=self._metadata)


def format_hits(resp: pb.SearchResponse, text_key: str = "title", width: int = 90) -> str:
    lines = []
    for rank, h in enumerate(resp.hits, 1):
        payload = MessageToDict(h.payload) if h.HasField("payload") else {}
        label = str(payload.get(text_key) or payload.get("text") or "")[:width]
        lines.append(f"  {rank:>2}. {h.score:8.3f}  docid={h.docid or '-':<12} doc={payload.get('doc_id', '?'):<6} {label}")
    return "\n".join(lines) if lines else "  (no hits)"

"""Configuration: one frozen dataclass from defaults, GENRET_* environment variables and CLI flags.

This is the only module that reads ``os.environ``.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

ENV_PREFIX = "GENRET_"
_SECRET_FIELDS = frozenset({"qdrant_api_key"})


@dataclass(frozen=True)
class Config:
    """Everything the sidecar and its commands need, passed explicitly."""

    # Qdrant
    qdrant_path: str = "genret-data/qdrant"
    qdrant_url: str = ""
    qdrant_api_key: str = ""
    collection: str = "genret"
    tenant_key: str = "tenant"
    text_key: str = "text"
    title_key: str = "title"
    docid_key: str = "genret_docid"  # the payload field of each point's docid; one per index over a collection
    # Index
    index_dir: str = "genret-data/index"
    device: str = "auto"
    # Server
    host: str = "127.0.0.1"
    port: int = 50051
    qdrant_port: int = -1  # the Qdrant-wire front door's port: -1 off, 0 a free one (see genret.api.qdrant_door)
    qdrant_grpc_port: int = 6334  # the gRPC port of the Qdrant server at qdrant_url (what the front door calls)
    metrics_port: int = -1  # Prometheus /metrics over HTTP: -1 off, 0 a free port (see genret.metrics)
    metrics_tenant_labels: int = 100  # tenants named in metric labels; the rest are "other"
    log_format: str = "text"  # text | json (one JSON object per line; an access line per RPC)
    log_queries: bool = False  # put query texts in the access log (never keys)
    otel_exporter: str = ""  # OpenTelemetry traces: "" off, "otlp" (OTEL_EXPORTER_OTLP_ENDPOINT), "console"
    grace_s: float = 5.0
    read_only: bool = False  # a read replica: writes to the served collection are refused (FAILED_PRECONDITION)
    follow_s: float = 0.0  # re-read docids from Qdrant this often and rebuild the tenants that changed; 0: never
    health_interval_s: float = 1.0  # how often Qdrant is probed; health is NOT_SERVING while it does not answer
    max_query_chars: int = 2048
    max_top_k: int = 100
    max_beam: int = 200
    max_batch: int = 256
    default_top_k: int = 10
    default_beam: int = 20
    max_write_batch: int = 256  # documents per upsert or delete call
    max_document_chars: int = 100_000  # title + text of one document
    max_write_chars: int = 4_000_000  # titles + texts of one upsert call
    # Auth, TLS, fairness
    keys_file: str = ""  # JSON of key digests -> tenants (see genret.api.auth); empty: no auth
    keys_grace_s: float = 10.0  # a missing or unreadable key file refuses every key after this long
    tls_cert: str = ""  # PEM certificate chain; with tls_key, the port serves TLS only
    tls_key: str = ""
    tenant_max_inflight: int = 32  # one tenant's requests (RPCs) being served or queued
    max_inflight: int = 512  # all tenants together
    admission_wait_s: float = 1.0  # a request at a cap waits this long for a slot before RESOURCE_EXHAUSTED
    tenant_max_new_docids: int = 64  # docids one tenant may hold that the model was not trained on; 0: no cap
    batch_rows: int = 0  # rows decoded together at most; 0: 8 on a CPU, 32 on a GPU
    write_workers: int = 2  # writes of different tenants run side by side (one at a time per tenant)
    kernel_backend: str = "auto"  # auto | triton | torch
    scoring: str = "vocab"  # vocab | children (see genret.decoding.beam)
    hybrid_lexical: bool = True  # HYBRID/AUTO with DBSF or RRF also fuse BM25 over the tenant's own documents
    lexical_max_docs: int = 1_000_000  # documents in the tenants' lexical indexes held at once (least recent go)

    def redacted(self) -> dict[str, Any]:
        """The config as a dict with secrets replaced, for logging."""
        out = dataclasses.asdict(self)
        for name in _SECRET_FIELDS:
            if out.get(name):
                out[name] = "***"
        return out

    @property
    def uses_server(self) -> bool:
        return bool(self.qdrant_url)


def _coerce(value: str, like: Any) -> Any:
    if isinstance(like, bool):
        return value.strip().lower() in {"1", "true", "yes", "on"}
    if isinstance(like, int):
        return int(value)
    if isinstance(like, float):
        return float(value)
    return value


def load_config(overrides: dict[str, Any] | None = None, environ: dict[str, str] | None = None) -> Config:
    """Defaults, then ``GENRET_<FIELD>`` variables, then non-None ``overrides`` (CLI flags)."""
    env = dict(os.environ) if environ is None else environ
    base = Config()
    values: dict[str, Any] = {}
    for f in fields(Config):
        raw = env.get(ENV_PREFIX + f.name.upper())
        if raw is not None:
            values[f.name] = _coerce(raw, getattr(base, f.name))
    for key, val in (overrides or {}).items():
        if val is not None and key in {f.name for f in fields(Config)}:
            values[key] = val
    return dataclasses.replace(base, **values)


def launcher_ranks(environ: dict[str, str] | None = None) -> tuple[int, int, int]:
    """(rank, world size, local rank) as ``torchrun`` sets them; (0, 1, 0) in a process started alone."""
    env = dict(os.environ) if environ is None else environ
    return int(env.get("RANK", 0)), int(env.get("WORLD_SIZE", 1)), int(env.get("LOCAL_RANK", 0))


def force_offline() -> None:
    """No code path may reach a model hub: make Hugging Face libraries offline."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def ensure_dir(path: str | Path) -> Path:
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    return p

"""Configuration: one frozen dataclass from defaults, GENRET_* environment variables and CLI flags.

This is the only module that reads ``os.environ``.
"""

from __future__ import annotations

import dataclasses
import math
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
    generative_feedback: float = 0.0  # weight of the generative list's feedback score (genret.serving.feedback); 0: off
    lexical_tenant_max_docs: int = 1_000_000  # a tenant with more documents gets no lexical index
    lexical_idle_s: float = 600.0  # a tenant's lexical index is dropped after this long without its searches
    lexical_build_processes: int = 2  # worker processes that build lexical indexes and tokenize large writes; 0: none

    def __post_init__(self) -> None:
        problems = [f"{name} must be at least {low}, got {getattr(self, name)}"
                    for name, low in _AT_LEAST.items() if getattr(self, name) < low]
        problems += [f"{name} must be at most 65535, got {getattr(self, name)}" for name in _PORTS
                     if getattr(self, name) > 65535]
        problems += [f"{name} must be one of {', '.join(repr(c) for c in choices)}, got {getattr(self, name)!r}"
                     for name, choices in _CHOICES.items() if getattr(self, name) not in choices]
        problems += [f"{default} must be at most {cap} ({getattr(self, cap)}), got {getattr(self, default)}"
                     for default, cap in (("default_top_k", "max_top_k"), ("default_beam", "max_beam"))
                     if getattr(self, default) > getattr(self, cap)]
        if not math.isfinite(self.generative_feedback):
            problems.append(f"generative_feedback must be a finite number, got {self.generative_feedback}")
        if problems:
            raise ValueError("invalid configuration: " + "; ".join(problems))

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


# Each field's lowest allowed value (the ports' -1 is "off", 0 "a free one"); ports are also at most 65535.
_AT_LEAST: dict[str, float] = {
    "port": 0, "qdrant_port": -1, "qdrant_grpc_port": 1, "metrics_port": -1, "metrics_tenant_labels": 0,
    "grace_s": 0, "follow_s": 0, "health_interval_s": 0.001, "keys_grace_s": 0, "admission_wait_s": 0,
    "max_query_chars": 1, "max_top_k": 1, "max_beam": 1, "max_batch": 1, "default_top_k": 1, "default_beam": 1,
    "max_write_batch": 1, "max_document_chars": 1, "max_write_chars": 1, "tenant_max_inflight": 1,
    "max_inflight": 1, "tenant_max_new_docids": 0, "batch_rows": 0, "write_workers": 1, "lexical_tenant_max_docs": 1,
    "lexical_idle_s": 1, "lexical_build_processes": 0, "generative_feedback": 0,
}
_PORTS = ("port", "qdrant_port", "qdrant_grpc_port", "metrics_port")
_CHOICES: dict[str, tuple[str, ...]] = {
    "log_format": ("text", "json"), "otel_exporter": ("", "otlp", "console"),
    "kernel_backend": ("auto", "triton", "torch"), "scoring": ("vocab", "children"),
}
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off", ""}
# Variables that no longer exist, refused by name so a setting is never silently dropped.
_RETIRED = {"GENRET_LEXICAL_MAX_DOCS": "set GENRET_LEXICAL_TENANT_MAX_DOCS, a limit per tenant, instead"}


def _coerce(name: str, value: str, like: Any) -> Any:
    """An environment variable's text as the field's type; ValueError naming the variable otherwise."""
    text = value.strip()
    if isinstance(like, bool):
        if text.lower() not in _TRUE | _FALSE:
            raise ValueError(f"{name} must be a boolean (1/0, true/false, yes/no, on/off), got {value!r}")
        return text.lower() in _TRUE
    kind = int if isinstance(like, int) else float if isinstance(like, float) else None
    if kind is None:
        return value
    try:
        return kind(text)
    except ValueError:
        raise ValueError(f"{name} must be {'an integer' if kind is int else 'a number'}, got {value!r}") from None


def load_config(overrides: dict[str, Any] | None = None, environ: dict[str, str] | None = None) -> Config:
    """Defaults, then ``GENRET_<FIELD>`` variables, then non-None ``overrides`` (CLI flags)."""
    env = dict(os.environ) if environ is None else environ
    retired = [f"{name} is no longer read: {instead}" for name, instead in _RETIRED.items() if name in env]
    if retired:
        raise ValueError("invalid configuration: " + "; ".join(retired))
    base = Config()
    values: dict[str, Any] = {}
    for f in fields(Config):
        raw = env.get(ENV_PREFIX + f.name.upper())
        if raw is not None:
            values[f.name] = _coerce(ENV_PREFIX + f.name.upper(), raw, getattr(base, f.name))
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

"""Prometheus metrics: what an operator watches, with tenant labels that cannot blow up.

Every layer records into one registry (``REGISTRY``); ``genret serve --metrics-port N`` serves it over HTTP
(``/metrics``; off by default). Tenant labels are bounded: the first ``tenant_labels`` tenants (100 by
default) that send traffic keep their own name, every later one is counted as ``other``, so a million
tenants make at most ``tenant_labels + 1`` series per metric.
"""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

OTHER = "other"
REGISTRY = CollectorRegistry(auto_describe=True)
_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

RPC_SECONDS = Histogram("genret_rpc_seconds", "RPC latency by service, method and status code",
                        ["service", "method", "code"], buckets=_LATENCY, registry=REGISTRY)
RPCS = Counter("genret_rpcs", "RPCs answered, by service, method and status code", ["service", "method", "code"],
               registry=REGISTRY)
SEARCH_SECONDS = Histogram("genret_search_seconds", "Engine time per search batch row, by mode and fusion",
                           ["mode", "fusion"], buckets=_LATENCY, registry=REGISTRY)
BATCH_ROWS = Histogram("genret_batch_rows", "Rows per decoded batch", buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
                       registry=REGISTRY)
DECODE_STEPS = Counter("genret_decode_steps", "Constrained decoding steps run", registry=REGISTRY)
QDRANT_SECONDS = Histogram("genret_qdrant_seconds", "Qdrant call latency by operation and outcome",
                           ["operation", "outcome"], buckets=_LATENCY, registry=REGISTRY)
WRITES = Counter("genret_writes", "Documents written, by tenant and kind (upsert, delete, sync)",
                 ["tenant", "kind"], registry=REGISTRY)
PUBLISHES = Counter("genret_snapshot_publishes", "Namespace snapshots published", registry=REGISTRY)
NAMESPACE_DOCS = Gauge("genret_namespace_documents", "Live docids per tenant namespace", ["tenant"],
                       registry=REGISTRY)
INFLIGHT = Gauge("genret_inflight", "Requests admitted and not finished, by tenant", ["tenant"], registry=REGISTRY)
LEXICAL_BUILDS = Counter("genret_lexical_builds", "Tenants' lexical (BM25) index builds, by outcome: held, or "
                         "refused (over GENRET_LEXICAL_TENANT_MAX_DOCS)", ["outcome"], registry=REGISTRY)
LEXICAL_CHANGES = Counter("genret_lexical_changes", "Tenants' writes that reached a lexical index held or being "
                          "built, by how: in_place, or dropped (what changed is not known, a build was under way, "
                          "or the tenant outgrew GENRET_LEXICAL_TENANT_MAX_DOCS)", ["how"], registry=REGISTRY)
LEXICAL_DOCS = Gauge("genret_lexical_documents", "Documents in the lexical indexes held, all tenants",
                     registry=REGISTRY)
REJECTIONS = Counter("genret_rejections", "Requests refused at admission (RESOURCE_EXHAUSTED), by tenant",
                     ["tenant"], registry=REGISTRY)


class TenantLabels:
    """A tenant's label: its name for the first ``limit`` tenants seen, ``other`` after that."""

    def __init__(self, limit: int = 100) -> None:
        self.limit = limit
        self._named: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, tenant: str) -> str:
        if tenant in self._named:
            return tenant
        with self._lock:
            if len(self._named) < self.limit:
                self._named.add(tenant)
                return tenant
        return OTHER


TENANTS = TenantLabels()


def serve_metrics(port: int, host: str = "127.0.0.1", tenant_labels: int = 100) -> int:
    """Serve ``REGISTRY`` on ``host:port`` (0: a free port) in a background thread; the port bound."""
    TENANTS.limit = tenant_labels
    server, _ = start_http_server(port, addr=host, registry=REGISTRY)
    return int(server.server_port)

"""Prometheus metrics, scraped over HTTP after real RPCs; tenant labels stay bounded."""

from __future__ import annotations

import asyncio
import re
import time
import urllib.request
from typing import Any

import grpc
import pytest

from genret.api.limits import TenantLimiter
from genret.metrics import OTHER, REGISTRY, TENANTS, TenantLabels, serve_metrics
from genret.v1 import genret_pb2 as pb

from .conftest import TENANT, Stack


def _scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        return r.read().decode()


def _value(text: str, series: str) -> float:
    """A sample's value in a scrape (0 when absent): ``series`` is its name with labels, as printed."""
    found = re.search(re.escape(series) + r" ([0-9.e+-]+)\n", text)
    return float(found.group(1)) if found else 0.0


def test_metrics_after_a_few_rpcs(stack: Stack) -> None:
    port = serve_metrics(0)
    ok = 'genret_rpcs_total{code="OK",method="Search",service="genret.v1.GenRet"}'
    missing = 'genret_rpcs_total{code="NOT_FOUND",method="Search",service="genret.v1.GenRet"}'
    hybrid = 'genret_search_seconds_count{fusion="default",mode="hybrid"}'
    before = _scrape(port)
    stack.stub.Search(pb.SearchRequest(tenant=TENANT, query="wing flutter", top_k=3))
    stack.stub.Search(pb.SearchRequest(tenant=TENANT, query="heat transfer", top_k=3, mode=pb.SEARCH_MODE_HYBRID))
    with pytest.raises(grpc.RpcError):
        stack.stub.Search(pb.SearchRequest(tenant="nobody", query="x"))
    deadline = time.monotonic() + 10  # an aborted call is counted just after its caller has the status
    while _value(text := _scrape(port), missing) == _value(before, missing) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _value(text, ok) - _value(before, ok) == 2
    assert _value(text, missing) - _value(before, missing) == 1
    assert _value(text, hybrid) - _value(before, hybrid) == 1
    assert 'genret_rpc_seconds_bucket{code="OK",le="0.5",method="Search",service="genret.v1.GenRet"}' in text
    assert _value(text, "genret_batch_rows_count") > _value(before, "genret_batch_rows_count")
    assert _value(text, "genret_decode_steps_total") > _value(before, "genret_decode_steps_total")
    assert _value(text, 'genret_qdrant_seconds_count{operation="retrieve",outcome="ok"}') > 0
    assert _value(text, f'genret_inflight{{tenant="{TENANT}"}}') == 0


def test_ten_thousand_tenants_make_a_bounded_number_of_series() -> None:
    labels = TenantLabels(limit=50)
    assert len({labels(f"tenant-{i}") for i in range(10_000)}) == 51
    assert labels("tenant-3") == "tenant-3" and labels("tenant-9999") == OTHER

    async def flood() -> None:
        limiter = TenantLimiter(per_tenant=1, total=100_000)
        for i in range(10_000):
            async with limiter.admit([f"flood-{i}"]):
                pass

    asyncio.run(flood())
    series = [s for m in REGISTRY.collect() if m.name == "genret_inflight" for s in m.samples]
    assert len(series) <= TENANTS.limit + 1
    assert any(s.labels["tenant"] == OTHER for s in series)


def test_the_grafana_dashboard_reads_only_metrics_genret_exports() -> None:
    import json
    from pathlib import Path

    dash = json.loads((Path(__file__).parent / "grafana" / "genret-dashboard.json").read_text())
    exported = {m.name for m in REGISTRY.collect()}
    used = {name for p in dash["panels"] for t in p["targets"]
            for name in re.findall(r"genret_[a-z_]+", t["expr"])}
    base = {re.sub(r"_(bucket|sum|count|total)$", "", n) for n in used}
    assert used and base <= exported, base - exported


def test_one_access_line_per_rpc_with_the_callers_request_id_and_no_secrets(
        stack: Stack, caplog: pytest.LogCaptureFixture) -> None:
    import json
    import logging

    from genret.api.access_log import JsonFormatter

    caplog.set_level(logging.INFO, logger="genret.access")
    secret = "gr_not-a-real-key-but-never-logged"
    _, call = stack.stub.Search.with_call(pb.SearchRequest(tenant=TENANT, query="flutter of delta wings", top_k=2),
                                          metadata=(("x-request-id", "req-42"), ("x-api-key", secret)))
    assert ("x-request-id", "req-42") in tuple(call.trailing_metadata())
    with pytest.raises(grpc.RpcError) as err:
        stack.stub.Search(pb.SearchRequest(tenant=TENANT, query=""))
    assert any(k == "x-request-id" and v for k, v in err.value.trailing_metadata())
    def lines() -> list[dict[str, Any]]:
        return [json.loads(JsonFormatter().format(r)) for r in caplog.records if r.name == "genret.access"]

    waited = time.monotonic() + 5  # an aborted call's status reaches the caller before its line is written
    while not any(x["status"] == "INVALID_ARGUMENT" for x in lines()) and time.monotonic() < waited:
        time.sleep(0.05)
    mine = [x for x in lines() if x.get("request_id") == "req-42"]
    assert len(mine) == 1
    assert {k: mine[0][k] for k in ("service", "method", "tenant", "mode", "status")} == {
        "service": "genret.v1.GenRet", "method": "Search", "tenant": TENANT, "mode": "generative", "status": "OK"}
    assert mine[0]["latency_ms"] > 0 and "query" not in mine[0]
    assert any(x["status"] == "INVALID_ARGUMENT" for x in lines())
    assert all(secret not in r.getMessage() and "delta wings" not in r.getMessage() for r in caplog.records)

"""OpenTelemetry spans of a real RPC: the caller's trace continued, the request id on the RPC span, and
validate / batch / encode / decode / fusion / qdrant spans inside it."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from genret import tracing
from genret.v1 import genret_pb2 as pb

from .conftest import TENANT, Stack

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use(provider)
    try:
        yield exporter
    finally:
        tracing.use(None)


@pytest.mark.e2e
def test_a_hybrid_search_is_one_trace_continuing_the_callers(stack: Stack, spans: InMemorySpanExporter) -> None:
    title = next(iter(stack.titles.values()))
    metadata = (("traceparent", f"00-{TRACE_ID}-00f067aa0ba902b7-01"), ("x-request-id", "req-trace-1"))
    stack.stub.Search(pb.SearchRequest(tenant=TENANT, query=title, mode=pb.SEARCH_MODE_HYBRID), metadata=metadata,
                      timeout=30)
    got = spans.get_finished_spans()
    rpc = next(s for s in got if s.name == "genret.v1.GenRet/Search")
    assert format(rpc.context.trace_id, "032x") == TRACE_ID
    assert rpc.attributes["genret.request_id"] == "req-trace-1"
    assert rpc.attributes["rpc.grpc.status_code"] == "OK"
    mine = [s for s in got if s.context.trace_id == rpc.context.trace_id]
    names = {s.name for s in mine}
    assert {"validate", "batch", "encode", "decode", "fusion"} <= names
    assert any(n.startswith("qdrant.") for n in names)
    by_id = {s.context.span_id: s for s in mine}
    for s in mine:  # every span hangs under the RPC's span
        while s.parent is not None and s.parent.span_id in by_id:
            s = by_id[s.parent.span_id]
        assert s is rpc


@pytest.mark.e2e
def test_a_refused_call_is_traced_with_its_status(stack: Stack, spans: InMemorySpanExporter) -> None:
    import grpc

    with pytest.raises(grpc.RpcError):
        stack.stub.Search(pb.SearchRequest(tenant=TENANT, query=""), timeout=30)
    deadline = time.monotonic() + 10  # the span ends just after the caller has its status
    while not (found := [s for s in spans.get_finished_spans() if s.name == "genret.v1.GenRet/Search"]):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert found[0].attributes["rpc.grpc.status_code"] == "INVALID_ARGUMENT"


def test_tracing_off_costs_a_shared_no_op() -> None:
    tracing.use(None)
    assert tracing.span("x") is tracing.span("y")
    assert tracing.capture() is None
    fn = lambda: 1  # noqa: E731
    assert tracing.carry(fn) is fn


def test_an_unknown_exporter_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown trace exporter"):
        tracing.configure("jaeger")

"""OpenTelemetry traces: optional (the ``genret[tracing]`` extra) and off unless configured.

``genret serve --otel-exporter otlp`` sends spans over OTLP/gRPC to the collector named by the standard
``OTEL_EXPORTER_OTLP_ENDPOINT`` (default ``localhost:4317``); ``console`` prints them to stdout. Each RPC
of either door is a span named after its method. When the caller's metadata has a W3C ``traceparent``,
the span continues the caller's trace. The span carries the request id.

Inside an RPC span:

* ``validate`` checks the queries;
* ``batch`` is the micro-batch that decodes the request together with others. It is a child of the
  first row's RPC and links to the rest;
* ``encode`` and ``decode`` run the model;
* ``fusion`` combines the retrievers' lists;
* ``qdrant.<operation>`` is one span per Qdrant call.

With tracing off, ``span`` is a shared no-op context manager: nothing is allocated per call.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

T = TypeVar("T")
EXPORTERS = ("", "console", "otlp")
_NOOP = contextlib.nullcontext()
_tracer: Any = None


def configure(exporter: str, service_name: str = "genret") -> None:
    """Start exporting spans (``exporter``: "console" or "otlp"; "" leaves tracing off)."""
    global _tracer
    if exporter not in EXPORTERS:
        raise ValueError(f"unknown trace exporter '{exporter}'; one of: console, otlp")
    if not exporter:
        return
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
    except ImportError as exc:
        raise RuntimeError("tracing needs OpenTelemetry: pip install 'genret[tracing]'") from exc
    if exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        span_exporter: Any = OTLPSpanExporter()
    else:
        span_exporter = ConsoleSpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(BatchSpanProcessor(span_exporter))
    use(provider)


def use(provider: Any) -> None:
    """Trace through ``provider`` (an OpenTelemetry ``TracerProvider``; None turns tracing off)."""
    global _tracer
    _tracer = None if provider is None else provider.get_tracer("genret")


def enabled() -> bool:
    return _tracer is not None


def span(name: str, **attributes: Any) -> contextlib.AbstractContextManager[Any]:
    """A child span of the current one (a no-op while tracing is off)."""
    if _tracer is None:
        return _NOOP
    return _tracer.start_as_current_span(name, attributes=attributes)  # type: ignore[no-any-return]


def rpc_span(name: str, metadata: Sequence[tuple[str, str | bytes]], **attributes: Any
             ) -> contextlib.AbstractContextManager[Any]:
    """The server span of one RPC, continuing the caller's trace when its metadata carries one."""
    if _tracer is None:
        return _NOOP
    from opentelemetry import propagate
    from opentelemetry.trace import SpanKind

    carrier = {k: v for k, v in metadata if isinstance(v, str)}
    return _tracer.start_as_current_span(name, context=propagate.extract(carrier), kind=SpanKind.SERVER,  # type: ignore[no-any-return]
                                         attributes=attributes)


def capture() -> Any:
    """The current trace context, to hand to another thread (None while tracing is off)."""
    if _tracer is None:
        return None
    from opentelemetry import context

    return context.get_current()


@contextlib.contextmanager
def batch(contexts: Sequence[Any], rows: int) -> Iterator[None]:
    """A span for work done for several requests at once: a child of the first, linked to every one."""
    if _tracer is None or not contexts or contexts[0] is None:
        yield
        return
    from opentelemetry import trace

    links = [trace.Link(trace.get_current_span(c).get_span_context()) for c in contexts if c is not None]
    with _tracer.start_as_current_span("batch", context=contexts[0], links=links, attributes={"rows": rows}):
        yield


def carry(fn: Callable[[], T]) -> Callable[[], T]:
    """``fn`` run under the caller's trace context, whichever thread runs it."""
    ctx = capture()
    if ctx is None:
        return fn

    def run() -> T:
        from opentelemetry import context

        token = context.attach(ctx)
        try:
            return fn()
        finally:
            context.detach(token)

    return run

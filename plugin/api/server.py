"""The gRPC servers: genret.v1 with health and reflection, the Qdrant-wire front door, graceful shutdown."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from genret import errors, tracing
from genret.api import access_log
from genret.api.qdrant_door import QdrantDoor
from genret.api.servicer import GenRetServicer, status_for
from genret.config import Config
from genret.metrics import RPC_SECONDS, RPCS, serve_metrics
from genret.store import QdrantStore
from genret.store.wire import Upstream
from genret.types import SearchService
from genret.v1 import genret_pb2 as pb

log = logging.getLogger(__name__)
SERVICE_NAME = pb.DESCRIPTOR.services_by_name["GenRet"].full_name


@dataclass
class RunningServer:
    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    servicer: GenRetServicer
    door: grpc.aio.Server | None = None  # the Qdrant-wire front door, on a port of its own
    door_port: int = 0
    upstream: Upstream | None = None
    watcher: asyncio.Task[None] | None = None
    follower: asyncio.Task[None] | None = None

    async def set_serving(self, serving: bool) -> None:
        status = (health_pb2.HealthCheckResponse.SERVING if serving
                  else health_pb2.HealthCheckResponse.NOT_SERVING)
        for name in ("", SERVICE_NAME):
            await self.health.set(name, status)

    async def stop(self, grace: float) -> None:
        for task in (self.watcher, self.follower):
            if task is not None:
                task.cancel()
        await self.set_serving(False)
        if self.door is not None:
            await self.door.stop(grace)
        await self.server.stop(grace)
        if self.upstream is not None:
            await self.upstream.close()
        self.servicer.close()


def _genret_handler(servicer: GenRetServicer) -> grpc.GenericRpcHandler:
    handlers = {name: grpc.unary_unary_rpc_method_handler(
        fn, request_deserializer=parse, response_serializer=lambda msg: msg.SerializeToString())
        for name, (fn, parse) in servicer.methods().items()}
    return grpc.method_handlers_generic_handler(SERVICE_NAME, handlers)


class _ReflectionForAdmins(grpc.aio.ServerInterceptor):
    """With API keys, server reflection (which lists the management RPCs) needs the admin key; health stays
    open to every caller, so load balancers and orchestrators can probe without a key."""

    def __init__(self, servicer: GenRetServicer) -> None:
        self._servicer = servicer

    async def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
                                details: grpc.HandlerCallDetails) -> Any:
        if details.method.startswith("/grpc.reflection."):  # every version of the reflection service
            try:
                self._servicer.principal(details.invocation_metadata or ()).check_admin()  # type: ignore[attr-defined]
            except errors.GenretError as exc:
                code = status_for(exc) or grpc.StatusCode.PERMISSION_DENIED
                return grpc.stream_stream_rpc_method_handler(_refuse(code, str(exc)))
        return await continuation(details)


class _Measured(grpc.aio.ServerInterceptor):
    """Each unary RPC's latency and status code, into ``genret_rpc_seconds`` and ``genret_rpcs``, and its
    access log line (``genret.api.access_log``) under its request id."""

    def __init__(self, log_queries: bool = False) -> None:
        self._log_queries = log_queries

    async def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
                                details: grpc.HandlerCallDetails) -> Any:
        handler = await continuation(details)
        if handler is None or handler.unary_unary is None:
            return handler
        service, _, method = details.method.lstrip("/").rpartition("/")
        inner = handler.unary_unary

        async def measured(request: Any, context: grpc.aio.ServicerContext) -> Any:
            t0, code = time.perf_counter(), "OK"
            metadata = tuple(context.invocation_metadata() or ())
            fields = access_log.start(access_log.request_id(metadata))
            context.set_trailing_metadata(((access_log.REQUEST_ID, fields["request_id"]),))
            attributes = {"rpc.service": service, "rpc.method": method, "genret.request_id": fields["request_id"]}
            try:
                with tracing.rpc_span(f"{service}/{method}", metadata, **attributes) as span:
                    try:
                        return await inner(request, context)
                    except BaseException:
                        found = context.code()
                        code = found.name if isinstance(found, grpc.StatusCode) else "UNKNOWN"
                        raise
                    finally:
                        if span is not None:
                            span.set_attribute("rpc.grpc.status_code", code)
            finally:
                took = time.perf_counter() - t0
                RPC_SECONDS.labels(service, method, code).observe(took)
                RPCS.labels(service, method, code).inc()
                access_log.finish(fields, service, method, code, took, self._log_queries)

        return grpc.unary_unary_rpc_method_handler(measured, request_deserializer=handler.request_deserializer,
                                                   response_serializer=handler.response_serializer)


def _refuse(code: grpc.StatusCode, message: str) -> Callable[[Any, grpc.aio.ServicerContext], Awaitable[None]]:
    async def refuse(requests: Any, context: grpc.aio.ServicerContext) -> None:
        await context.abort(code, message)

    return refuse


def _bind(server: grpc.aio.Server, config: Config, port: int) -> int:
    address = f"{config.host}:{port}"
    if config.tls_cert or config.tls_key:
        if not (config.tls_cert and config.tls_key):
            raise ValueError("TLS needs both tls_cert and tls_key")
        creds = grpc.ssl_server_credentials([(Path(config.tls_key).read_bytes(), Path(config.tls_cert).read_bytes())])
        bound = server.add_secure_port(address, creds)
    else:
        bound = server.add_insecure_port(address)
    if bound == 0:
        raise OSError(f"could not bind {address}")
    return bound


def _build_door(config: Config, upstream: Upstream, servicer: GenRetServicer) -> tuple[grpc.aio.Server, int]:
    """Qdrant's gRPC services on ``config.qdrant_port`` (0 picks a free one), with their own health."""
    door = grpc.aio.server(options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)],
                           interceptors=[_Measured(config.log_queries)])
    door.add_generic_rpc_handlers(tuple(QdrantDoor(config, upstream, servicer).handlers()))
    return door, _bind(door, config, config.qdrant_port)


def build_server(config: Config, engine: SearchService, upstream: Upstream | None = None) -> RunningServer:
    """A server bound to ``config.host:config.port`` (port 0 picks a free one), and, with ``upstream`` and
    ``config.qdrant_port`` >= 0, the Qdrant-wire front door; not started yet."""
    servicer = GenRetServicer(config, engine)
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", 16 * 1024 * 1024)],
                             interceptors=[_ReflectionForAdmins(servicer), _Measured(config.log_queries)])
    server.add_generic_rpc_handlers((_genret_handler(servicer),))
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        (SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
        server)
    port = _bind(server, config, config.port)
    if upstream is None or config.qdrant_port < 0:
        return RunningServer(server, port, health_servicer, servicer)
    door, door_port = _build_door(config, upstream, servicer)
    return RunningServer(server, port, health_servicer, servicer, door, door_port, upstream)


async def _watch_qdrant(running: RunningServer, engine: SearchService, interval: float) -> None:
    """Health follows Qdrant: NOT_SERVING while it does not answer, SERVING again (no restart) when it does."""
    serving = True
    while True:
        await asyncio.sleep(interval)
        up = await asyncio.to_thread(engine.ping)
        if up != serving:
            serving = up
            await running.set_serving(up)
            if up:
                log.warning("Qdrant answers again: serving")
            else:
                log.error("Qdrant does not answer: health NOT_SERVING, requests UNAVAILABLE until it does")


async def _follow_qdrant(engine: SearchService, interval: float) -> None:
    """A replica that does not take the writes catches up with them: every ``interval`` seconds."""
    while True:
        await asyncio.sleep(interval)
        try:
            changed = await asyncio.to_thread(engine.follow)
        except errors.GenretError as exc:  # Qdrant away: health says so; try again next time
            log.warning("could not follow Qdrant: %s", exc)
            continue
        if changed:
            log.info("followed writes of %d tenant(s) from Qdrant", len(changed))


async def start(config: Config, engine: SearchService, upstream: Upstream | None = None) -> RunningServer:
    """Start serving; health turns SERVING here, after the engine (model and tries) is loaded, and then
    follows Qdrant (probed every ``config.health_interval_s``)."""
    running = build_server(config, engine, upstream)
    await running.server.start()
    if running.door is not None:
        await running.door.start()
        log.info("Qdrant front door for %s on %s:%d", engine.collection, config.host, running.door_port)
    await running.set_serving(True)
    if config.health_interval_s > 0:
        running.watcher = asyncio.create_task(_watch_qdrant(running, engine, config.health_interval_s))
    if config.follow_s > 0:
        running.follower = asyncio.create_task(_follow_qdrant(engine, config.follow_s))
    log.info("genret serving %s on %s:%d", engine.collection, config.host, running.port)
    return running


async def serve(config: Config, load: Callable[[Config, QdrantStore], SearchService],
                ready: asyncio.Event | None = None, store: QdrantStore | None = None) -> None:
    """`genret serve`: ``load`` the engine (index and namespaces) on ``store`` (default: the one ``config``
    names), serve until SIGTERM/SIGINT, then drain."""
    log.info("config: %s", json.dumps(config.redacted(), sort_keys=True))
    tracing.configure(config.otel_exporter)
    if config.metrics_port >= 0:
        port = serve_metrics(config.metrics_port, config.host, config.metrics_tenant_labels)
        print(f"genret: metrics on http://{config.host}:{port}/metrics", flush=True)
    store = store or QdrantStore(config)
    try:
        engine = load(config, store)
        running = await start(config, engine, store.upstream() if config.qdrant_port >= 0 else None)
        print(f"genret: serving on {config.host}:{running.port}", flush=True)
        if running.door is not None:
            print(f"genret: Qdrant front door on {config.host}:{running.door_port}", flush=True)
        if ready is not None:
            ready.set()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("shutting down (grace %.1fs)", config.grace_s)
        await running.stop(config.grace_s)
    finally:
        store.close()


class ServerThread:
    """Run the server on its own event loop in a background thread (demo, tests, embedding apps)."""

    def __init__(self, config: Config, engine: SearchService, upstream: Upstream | None = None) -> None:
        import threading

        self._config, self._engine, self._upstream = config, engine, upstream
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="genret-grpc", daemon=True)
        self._running: RunningServer | None = None

    def __enter__(self) -> ServerThread:
        self._thread.start()
        fut = asyncio.run_coroutine_threadsafe(start(self._config, self._engine, self._upstream), self._loop)
        self._running = fut.result(timeout=60)
        return self

    @property
    def port(self) -> int:
        assert self._running is not None
        return self._running.port

    @property
    def target(self) -> str:
        return f"{self._config.host}:{self.port}"

    @property
    def door_port(self) -> int:
        """The Qdrant front door's port (0: not served)."""
        assert self._running is not None
        return self._running.door_port

    def stop(self, grace: float = 1.0) -> None:
        if self._running is not None:
            asyncio.run_coroutine_threadsafe(self._running.stop(grace), self._loop).result(timeout=grace + 30)
            self._running = None
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)

    def __exit__(self, *exc: object) -> None:
        self.stop()

"""The typed clients against real in-process servers: results, deadlines, and gRPC's own retries, waiting and
round-robin across restarts and several sidecars."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import threading
import time

import grpc
import pytest

from genret.api.server import ServerThread
from genret.client import AsyncGenretClient, GenretClient, ScoredPoint

from .conftest import TENANT, Stack


def test_query_returns_scored_points_with_sources(stack: Stack) -> None:
    with GenretClient(stack.server.target) as client:
        for mode in ("generative", "dense", "hybrid", "auto"):
            points = client.query(TENANT, "supersonic wing flutter", limit=5, mode=mode)
            assert points and all(isinstance(p, ScoredPoint) for p in points)
            assert all(p.payload["tenant"] == TENANT for p in points)
            assert all(p.sources and p.retriever in (mode, "generative", "dense", "hybrid") for p in points)
            assert [p.score for p in points] == sorted((p.score for p in points), reverse=True)
        hybrid = client.query(TENANT, "supersonic wing flutter", limit=20, mode="hybrid", fusion="rrf")
        both = [p for p in hybrid if {"generative", "dense"} <= {s.retriever for s in p.sources}]
        assert both and all(len({s.retriever for s in p.sources}) == len(p.sources) for p in hybrid)
        with pytest.raises(ValueError, match="valid"):
            client.query(TENANT, "x", mode="psychic")


def test_deadline_is_not_retried(stack: Stack) -> None:
    with GenretClient(stack.server.target, timeout_s=0.001, retries=5) as client:
        t0 = time.monotonic()
        with pytest.raises(grpc.RpcError) as info:
            client.query(TENANT, "wing", limit=5, beam_size=100)
        assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED and time.monotonic() - t0 < 1.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_a_call_waits_for_a_sidecar_that_is_starting(stack: Stack) -> None:
    port = free_port()
    cfg = dataclasses.replace(stack.config, port=port)
    server: list[ServerThread] = []
    starter = threading.Timer(1.0, lambda: server.append(ServerThread(cfg, stack.engine).__enter__()))
    starter.start()
    try:
        with GenretClient(f"127.0.0.1:{port}", timeout_s=30) as client:
            assert client.query(TENANT, "wing", limit=2)
        with GenretClient(f"127.0.0.1:{free_port()}", timeout_s=5, retries=1, backoff_s=0.05,
                          wait_for_ready=False) as nobody:
            t0 = time.monotonic()
            with pytest.raises(grpc.RpcError) as info:
                nobody.query(TENANT, "wing")
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE and time.monotonic() - t0 < 5
    finally:
        starter.join()
        for s in server:
            s.stop()


def _restarting(stack: Stack, port: int, after_s: float) -> tuple[list[ServerThread], threading.Thread]:
    """A sidecar on ``port`` stopped now and started again ``after_s`` later (same port, same engine)."""
    cfg = dataclasses.replace(stack.config, port=port)
    servers = [ServerThread(cfg, stack.engine).__enter__()]

    def bounce() -> None:
        servers[0].stop()
        time.sleep(after_s)
        servers.append(ServerThread(cfg, stack.engine).__enter__())

    return servers, threading.Thread(target=bounce)


def test_sync_and_async_clients_ride_through_a_restart(stack: Stack) -> None:
    port = free_port()
    servers, bounce = _restarting(stack, port, 1.0)
    try:
        with GenretClient(f"127.0.0.1:{port}", timeout_s=30) as client:
            assert client.query(TENANT, "wing", limit=2)
            bounce.start()
            time.sleep(0.3)  # stopped now
            assert client.query(TENANT, "wing", limit=2)  # waits for the restart, then answers
        bounce.join()

        async def run() -> int:
            async with AsyncGenretClient(f"127.0.0.1:{port}", timeout_s=30) as client:
                first = await client.query(TENANT, "shock", limit=2)
                again = threading.Thread(target=lambda: (servers[-1].stop(), time.sleep(1.0),
                                                         servers.append(ServerThread(
                                                             dataclasses.replace(stack.config, port=port),
                                                             stack.engine).__enter__())))
                again.start()
                await asyncio.sleep(0.3)
                second = await client.query(TENANT, "shock", limit=2)
                await asyncio.to_thread(again.join)
                return len(first) + len(second)

        assert asyncio.run(run()) == 4
    finally:
        for s in servers:
            s.stop()


def test_calls_go_round_robin_and_survive_one_sidecar_stopping(stack: Stack) -> None:
    ports = [free_port(), free_port()]
    servers = [ServerThread(dataclasses.replace(stack.config, port=p), stack.engine).__enter__() for p in ports]
    try:
        with GenretClient(",".join(f"127.0.0.1:{p}" for p in ports), timeout_s=10) as client:
            for _ in range(4):
                assert client.query(TENANT, "wing", limit=2)
            servers[0].stop()
            for _ in range(4):
                assert client.query(TENANT, "wing", limit=2)
    finally:
        for s in servers:
            s.stop()


def test_async_client(stack: Stack) -> None:
    async def run() -> list[ScoredPoint]:
        async with AsyncGenretClient(stack.server.target) as client:
            results = await asyncio.gather(*(client.query(TENANT, q, limit=3, mode="hybrid")
                                             for q in ("wing", "heat transfer", "shock")))
            return [p for r in results for p in r]

    points = asyncio.run(run())
    assert len(points) == 9 and all(p.payload["tenant"] == TENANT for p in points)

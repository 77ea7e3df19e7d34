"""Kill -9 the sidecar during a stream of upserts and deletes; after a restart, Qdrant and the namespaces
agree with each other and with every change the client was told succeeded."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import grpc
import pytest
import torch

from genret.client import GenretClient
from genret.config import Config
from genret.data.index_dir import read_manifest
from genret.data.loader import load_beir
from genret.errors import Unavailable
from genret.indexing.indexer import IndexOptions, build_index
from genret.indexing.training import TrainConfig
from genret.serving.engine import Engine
from genret.serving.namespaces import load_namespaces
from genret.store import QdrantStore, point_id_for
from genret.types import NewDocument

from .conftest import small_corpus

TENANT = "t1"


def start_server(env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-m", "genret.cli", "serve", "--port", "0"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(r"serving on ([\d.]+):(\d+)", line)
    assert match, line + (proc.stderr.read() if proc.stderr else "")
    return proc, f"{match.group(1)}:{match.group(2)}"


def test_killed_mid_stream_recovers_to_what_was_acknowledged(tmp_path: Path) -> None:
    corpus = small_corpus(tmp_path, 12)
    env = {**os.environ, "GENRET_QDRANT_PATH": str(tmp_path / "q"), "GENRET_INDEX_DIR": str(tmp_path / "idx"),
           "GENRET_COLLECTION": "crash", "GENRET_DEVICE": "cpu"}
    store = QdrantStore(Config(qdrant_path=env["GENRET_QDRANT_PATH"], collection="crash"))
    try:  # set up in this process; only the sidecar runs (and is killed) in its own
        load_beir(store, corpus, TENANT, with_vectors=True)
        build_index(store, env["GENRET_INDEX_DIR"], IndexOptions(scheme="semantic", branching=4, model="tiny",
                                                                 train=TrainConfig(epochs=1, progress=False)),
                    torch.device("cpu"))
    finally:
        store.close()
    original = {f"{i}" for i in range(1, 13)}  # Cranfield ids of the first 12 documents

    proc, target = start_server(env)
    try:
        _stream_kill_restart(env, proc, target, original, tmp_path)
    finally:
        if proc.poll() is None:
            proc.kill()


def _stream_kill_restart(env: dict[str, str], proc: subprocess.Popen[str], target: str, original: set[str],
                         tmp_path: Path) -> None:
    acked_live: set[str] = set(original)
    acked_gone: set[str] = set()
    uncertain: set[str] = set()
    acks = threading.Semaphore(0)
    done = threading.Event()
    failures: list[grpc.RpcError] = []

    def stream() -> None:  # fails at the kill (no waiting for a sidecar to come back)
        with GenretClient(target, timeout_s=30, wait_for_ready=False) as client:
            for i in range(500):
                doc = f"u{i}"
                try:
                    uncertain.add(doc)
                    client.upsert(TENANT, [(doc, f"title {i}", f"a new document about wing number {i}")])
                    uncertain.discard(doc)
                    acked_live.add(doc)
                    acks.release()
                    if i % 3 == 2:
                        victim = f"u{i - 2}"
                        uncertain.add(victim)
                        client.delete(TENANT, [victim])
                        uncertain.discard(victim)
                        acked_live.discard(victim)
                        acked_gone.add(victim)
                        acks.release()
                except grpc.RpcError as exc:
                    failures.append(exc)
                    break
        done.set()

    writer = threading.Thread(target=stream)
    writer.start()
    for _ in range(12):
        assert acks.acquire(timeout=120), failures
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    writer.join(timeout=60)
    assert done.is_set() and len(acked_live - original) >= 6

    proc, target = start_server(env)
    try:
        with GenretClient(target, timeout_s=60) as client:
            count = client.info(TENANT).namespaces[0].documents
            hits = client.search(TENANT, "wing", top_k=100, beam_size=200, with_payload=True).hits
            served = {h.payload.fields["doc_id"].string_value for h in hits}
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)

    # What the client was told is what there is; only the one call cut off by the kill may go either way.
    assert acked_live <= served <= acked_live | uncertain
    assert not served & (acked_gone - uncertain)
    assert count == len(served)

    cfg = Config(qdrant_path=str(tmp_path / "q"), collection="crash", index_dir=str(tmp_path / "idx"))
    store = QdrantStore(cfg)
    try:
        in_qdrant = {d.doc_id: d.docid for d in store.scroll_tenant(TENANT)}
        assert set(in_qdrant) == served and all(in_qdrant.values())  # every point has its docid
        ns = load_namespaces(store, read_manifest(cfg.index_dir).docid_codec())  # raises on duplicate docids
        assert sorted(ns.docids()) == sorted(in_qdrant.values())
        assert ns.entries_set(TENANT) == {point_id_for(TENANT, d) for d in in_qdrant}
        # A write that Qdrant cannot take leaves the served state as it was.
        engine = Engine.load(cfg, store)
        before = engine.namespaces
        store.client.close()
        with pytest.raises(Unavailable):
            engine.upsert(TENANT, [NewDocument("late", "", "a document that never arrives")])
        with pytest.raises(Unavailable):
            engine.delete(TENANT, [next(iter(in_qdrant))])
        assert engine.namespaces is before
    finally:
        store.close()

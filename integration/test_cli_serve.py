"""`genret load`, `genret serve` and `genret search` as a user runs them, each in its own process, with
`genret index` through the same entry point in this one; SIGTERM drains, and the server exits clean."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from qdrant_client import QdrantClient

from genret.cli import main

from .conftest import small_corpus


def genret(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "genret.cli", *args], env=env, capture_output=True, text=True,
                          timeout=300)


def test_cli_load_index_serve_search_sigterm(tmp_path: Path) -> None:
    corpus = small_corpus(tmp_path, 12)
    env = {**os.environ, "GENRET_QDRANT_PATH": str(tmp_path / "q"), "GENRET_INDEX_DIR": str(tmp_path / "idx"),
           "GENRET_COLLECTION": "cli", "GENRET_DEVICE": "cpu"}
    r = genret("load", "--data", str(corpus), "--tenant", "t1", "--no-vectors", env=env)
    assert r.returncode == 0, r.stderr
    assert "loaded 12 documents" in r.stdout
    # index in this process: `genret index` in processes of its own is test_distributed_training.py's
    assert main(["index", "--qdrant-path", env["GENRET_QDRANT_PATH"], "--index-dir", env["GENRET_INDEX_DIR"],
                 "--collection", "cli", "--device", "cpu", "--model", "tiny", "--scheme", "atomic", "--epochs", "1",
                 "--generated-queries", "0"]) == 0
    assert (tmp_path / "idx" / "manifest.json").is_file() and (tmp_path / "idx" / "docids.jsonl").is_file()

    bad = genret("eval", "--data", str(tmp_path / "missing"), env=env)
    assert bad.returncode == 2 and "not found" in bad.stderr

    proc = subprocess.Popen([sys.executable, "-m", "genret.cli", "serve", "--port", "0"],
                            env={**env, "GENRET_QDRANT_PORT": "0"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"serving on ([\d.]+):(\d+)", line)
        assert match, line + (proc.stderr.read() if proc.stderr else "")
        target = f"{match.group(1)}:{match.group(2)}"
        door = re.search(r"Qdrant front door on [\d.]+:(\d+)", proc.stdout.readline())
        assert door, "the front door was not announced"
        qdrant = QdrantClient(host="127.0.0.1", grpc_port=int(door.group(1)), prefer_grpc=True,
                              check_compatibility=False)
        assert qdrant.count("cli").count == 12  # unmodified qdrant-client, through the door
        qdrant.close()
        with grpc.insecure_channel(target) as ch:
            health = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert health.status == health_pb2.HealthCheckResponse.SERVING
        r = genret("search", "--target", target, "--tenant", "t1", "--top-k", "3", "wing", env=env)
        assert r.returncode == 0, r.stderr
        assert len([ln for ln in r.stdout.splitlines() if "docid=" in ln]) == 3
        r = genret("search", "--target", target, "--tenant", "t2", "wing", env=env)
        assert r.returncode != 0 and "NOT_FOUND" in r.stderr
        proc.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        assert proc.wait(timeout=30) == 0
        assert time.monotonic() - t0 < 30
        assert proc.stderr is not None
        err = proc.stderr.read()
        assert "leaked" not in err, err[-3000:]  # the interpreter's last collections freed every object
    finally:
        if proc.poll() is None:
            proc.kill()

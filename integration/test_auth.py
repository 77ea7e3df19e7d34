"""API keys, tenant binding, admin RPCs, key-file reload, TLS and per-tenant limits, over real sockets."""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from genret.api.auth import add_key, digest
from genret.api.server import ServerThread
from genret.v1 import genret_pb2 as pb
from genret.v1 import genret_pb2_grpc as pb_grpc

from .conftest import OTHER, TENANT, Stack


@dataclasses.dataclass
class Secured:
    stub: pb_grpc.GenRetStub
    keys_file: Path
    acme: str
    both: str
    admin: str


@pytest.fixture(scope="module")
def secured(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    keys = tmp_path_factory.mktemp("keys") / "keys.json"
    acme = add_key(keys, "acme-app", [TENANT], admin=False)
    both = add_key(keys, "partner", [TENANT, OTHER], admin=False)
    admin = add_key(keys, "ops", [], admin=True)
    cfg = dataclasses.replace(stack.config, keys_file=str(keys), port=0)
    server = ServerThread(cfg, stack.engine).__enter__()
    channel = grpc.insecure_channel(server.target)
    try:
        yield Secured(pb_grpc.GenRetStub(channel), keys, acme, both, admin)
    finally:
        channel.close()
        server.stop()


def code(call) -> grpc.StatusCode:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code()


def search(s: Secured, tenant: str, key: str | None, header: str = "x-api-key") -> pb.SearchResponse:
    md = () if key is None else ((header, key if header == "x-api-key" else f"Bearer {key}"),)
    return s.stub.Search(pb.SearchRequest(tenant=tenant, query="wing", top_k=2), metadata=md, timeout=30)


def test_bound_key_searches_its_tenant_with_either_header(secured: Secured) -> None:
    assert search(secured, TENANT, secured.acme).hits
    assert search(secured, TENANT, secured.acme, header="authorization").hits
    assert search(secured, OTHER, secured.both).hits


def test_missing_or_unknown_key_is_unauthenticated(secured: Secured) -> None:
    assert code(lambda: search(secured, TENANT, None)) == grpc.StatusCode.UNAUTHENTICATED
    assert code(lambda: search(secured, TENANT, "gr_not-a-key")) == grpc.StatusCode.UNAUTHENTICATED
    assert code(lambda: search(secured, TENANT, "")) == grpc.StatusCode.UNAUTHENTICATED


def test_bound_key_cannot_name_another_tenant_on_any_rpc(secured: Secured) -> None:
    md = (("x-api-key", secured.acme),)
    denied = grpc.StatusCode.PERMISSION_DENIED
    assert code(lambda: search(secured, OTHER, secured.acme)) == denied
    batch = pb.SearchBatchRequest(requests=[pb.SearchRequest(tenant=TENANT, query="a"),
                                            pb.SearchRequest(tenant=OTHER, query="b")])
    assert code(lambda: secured.stub.SearchBatch(batch, metadata=md, timeout=30)) == denied
    assert code(lambda: secured.stub.GetIndexInfo(pb.GetIndexInfoRequest(tenant=OTHER), metadata=md)) == denied
    up = pb.UpsertRequest(tenant=OTHER, documents=[pb.Document(id="x", text="y")])
    assert code(lambda: secured.stub.UpsertDocuments(up, metadata=md, timeout=30)) == denied
    rm = pb.DeleteRequest(tenant=OTHER, ids=["1"])
    assert code(lambda: secured.stub.DeleteDocuments(rm, metadata=md, timeout=30)) == denied


def test_management_rpcs_need_the_admin_key(secured: Secured) -> None:
    md = (("x-api-key", secured.acme),)
    assert code(lambda: secured.stub.GetIndexInfo(pb.GetIndexInfoRequest(), metadata=md)) \
        == grpc.StatusCode.PERMISSION_DENIED
    assert code(lambda: secured.stub.ReloadKeys(pb.ReloadKeysRequest(), metadata=md)) \
        == grpc.StatusCode.PERMISSION_DENIED
    admin = (("x-api-key", secured.admin),)
    assert len(secured.stub.GetIndexInfo(pb.GetIndexInfoRequest(), metadata=admin).namespaces) >= 2
    assert secured.stub.ReloadKeys(pb.ReloadKeysRequest(), metadata=admin).keys == 3
    assert search(secured, OTHER, secured.admin).hits  # admin may use every tenant


def test_key_file_holds_digests_only_and_reloads_without_restart(secured: Secured) -> None:
    text = secured.keys_file.read_text()
    assert secured.acme not in text and digest(secured.acme).hex() in text
    new = add_key(secured.keys_file, "late", [OTHER], admin=False)
    time.sleep(1.1)  # the file is checked at most once a second
    assert search(secured, OTHER, new).hits
    # Revoke "late" and a bad edit: a file that does not parse keeps the last good keys.
    data = json.loads(secured.keys_file.read_text())
    data["keys"] = [k for k in data["keys"] if k["name"] != "late"]
    secured.keys_file.write_text(json.dumps(data))
    time.sleep(1.1)
    assert code(lambda: search(secured, OTHER, new)) == grpc.StatusCode.UNAUTHENTICATED
    secured.keys_file.write_text("{not json")
    time.sleep(1.1)
    assert search(secured, TENANT, secured.acme).hits
    secured.keys_file.write_text(json.dumps(data))


def test_keys_never_reach_the_logs(stack: Stack, secured: Secured, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("DEBUG"):
        code(lambda: search(secured, TENANT, "gr_secret-looking-value"))
        search(secured, TENANT, secured.acme)
    assert "gr_secret-looking-value" not in caplog.text and secured.acme not in caplog.text


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is needed to make a test certificate")
def test_tls_port_serves_tls_only(stack: Stack, tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True)
    cfg = dataclasses.replace(stack.config, tls_cert=str(cert), tls_key=str(key), port=0)
    with ServerThread(cfg, stack.engine) as server:
        creds = grpc.ssl_channel_credentials(root_certificates=cert.read_bytes())
        with grpc.secure_channel(server.target, creds) as ch:
            resp = pb_grpc.GenRetStub(ch).Search(pb.SearchRequest(tenant=TENANT, query="wing", top_k=1), timeout=30)
            assert resp.hits
        with grpc.insecure_channel(server.target) as ch:
            assert code(lambda: pb_grpc.GenRetStub(ch).Search(pb.SearchRequest(tenant=TENANT, query="wing"),
                                                             timeout=5)) == grpc.StatusCode.UNAVAILABLE


def test_a_tenant_over_its_limit_is_refused_while_others_are_served(stack: Stack) -> None:
    cfg = dataclasses.replace(stack.config, tenant_max_inflight=2, admission_wait_s=0.0, port=0)
    with ServerThread(cfg, stack.engine) as server, grpc.insecure_channel(server.target) as ch:
        stub = pb_grpc.GenRetStub(ch)
        flood = [pb.SearchRequest(tenant=TENANT, query=f"wing {i}", top_k=5, beam_size=60) for i in range(16)]

        def run(req: pb.SearchRequest) -> grpc.StatusCode:
            try:
                stub.Search(req, timeout=60)
                return grpc.StatusCode.OK
            except grpc.RpcError as exc:
                return exc.code()

        with ThreadPoolExecutor(max_workers=16) as pool:
            futures = [pool.submit(run, r) for r in flood]
            time.sleep(0.05)
            other = run(pb.SearchRequest(tenant=OTHER, query="wing", top_k=1))
            codes = [f.result() for f in futures]
        assert other == grpc.StatusCode.OK
        assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes and grpc.StatusCode.OK in codes
        assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}

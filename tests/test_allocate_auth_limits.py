"""Docid placement for new documents, API key files, and the per-tenant in-flight limiter."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from genret.allocate import TenantDocids, docid_for
from genret.auth import KeyRing, add_key, digest, key_from_metadata, parse_keys
from genret.docids import AtomicCodec, NaiveCodec, SemanticCodec
from genret.errors import FailedPrecondition, PermissionDenied, ResourceExhausted, Unauthenticated
from genret.limits import TenantLimiter


def unit(*xs: float) -> np.ndarray:
    v = np.asarray(xs, dtype=np.float32)
    return v / np.linalg.norm(v)


def test_new_document_lands_in_its_nearest_cluster_at_a_free_code() -> None:
    state = TenantDocids(SemanticCodec(3, 3))
    for d, v in [("0-0", unit(1, 0)), ("0-1", unit(1, 0.1)), ("1-0", unit(0, 1)), ("1-2", unit(0.1, 1))]:
        state.add(d, v)
    assert state.allocate(unit(0.05, 1)) == "1-1"  # the free code of the nearest cluster
    assert state.allocate(unit(1, 0.05)) == "0-2"


def test_full_cluster_goes_one_level_deeper_under_the_nearest_document() -> None:
    state = TenantDocids(SemanticCodec(2, 3))
    for d, v in [("0-0", unit(1, 0)), ("0-1", unit(1, 1)), ("1-0", unit(-1, 0)), ("1-1", unit(-1, -1))]:
        state.add(d, v)
    got = state.allocate(unit(1, 0.9))
    assert got == "0-1-0"  # cluster 0 is full: below its nearest member
    state.add(got, unit(1, 0.9))
    state.remove("1-1", unit(-1, -1))
    assert state.allocate(unit(-1, -0.5)) == "1-1"  # a freed code is reused


def test_full_space_and_other_schemes() -> None:
    state = TenantDocids(SemanticCodec(2, 1))
    state.add("0", None)
    state.add("1", None)
    with pytest.raises(FailedPrecondition, match="full"):
        state.allocate(None)
    atomic = TenantDocids(AtomicCodec(3))
    atomic.add("0", None)
    atomic.add("2", None)
    assert atomic.allocate(None) == "1"
    atomic.add("1", None)
    with pytest.raises(FailedPrecondition):
        atomic.allocate(None)
    shared: set[str] = set()  # atomic docids are one model row each: unique across tenants
    a, b = TenantDocids(AtomicCodec(4), shared), TenantDocids(AtomicCodec(4), shared)
    a.add("0", None)
    b.add("1", None)
    assert a.allocate(None) == "2" and b.allocate(None) == "2"
    a.add("2", None)
    assert b.allocate(None) == "3"
    a.remove("0", None)
    assert b.allocate(None) == "3"  # a freed row is not handed to another document
    naive_codec = NaiveCodec("abc", 3)
    naive = TenantDocids(naive_codec)
    assert docid_for(naive_codec, naive, "cab", None) == "cab"
    with pytest.raises(FailedPrecondition):
        docid_for(naive_codec, naive, "xyz", None)


def test_empty_tenant_fills_codes_in_order_then_goes_deeper() -> None:
    state = TenantDocids(SemanticCodec(2, 2))
    got = []
    for _ in range(6):
        d = state.allocate(None)
        state.add(d, None)
        got.append(d)
    assert got == ["0", "1", "0-0", "0-1", "1-0", "1-1"]
    with pytest.raises(FailedPrecondition):
        state.allocate(None)


def test_key_file_parsing_and_authentication(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    key = add_key(path, "app", ["acme"], admin=False)
    ring = KeyRing(path)
    p = ring.authenticate([("x-api-key", key)])
    assert p.name == "app" and p.tenants == {"acme"} and not p.admin
    p.check_tenant("acme")
    with pytest.raises(PermissionDenied):
        p.check_tenant("globex")
    with pytest.raises(PermissionDenied):
        p.check_admin()
    with pytest.raises(Unauthenticated):
        ring.authenticate([])
    with pytest.raises(Unauthenticated):
        ring.authenticate([("x-api-key", key + "x")])
    assert key_from_metadata([("Authorization", f"Bearer {key}")]) == key
    assert json.loads(path.read_text())["keys"][0]["sha256"] == digest(key).hex()


@pytest.mark.parametrize("text, words", [
    ("[]", "keys"), ('{"keys": [{"sha256": "ab"}]}', "64-hex"),
    ('{"keys": [{"sha256": "' + "a" * 64 + '"}]}', "neither"),
    ('{"keys": [{"sha256": "' + "a" * 64 + '", "tenants": [""]}]}', "tenant names"),
])
def test_bad_key_files_are_refused(text: str, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        parse_keys(text)


def test_limiter_caps_each_tenant_and_the_total() -> None:
    lim = TenantLimiter(per_tenant=2, total=3)
    with lim.admit(["a"]), lim.admit(["a"]):
        with pytest.raises(ResourceExhausted, match="tenant 'a'"):
            with lim.admit(["a"]):
                pass
        with lim.admit(["b"]):
            with pytest.raises(ResourceExhausted, match="server"):
                with lim.admit(["c"]):
                    pass
    assert lim.inflight("a") == 0
    with pytest.raises(ResourceExhausted):
        with lim.admit(["x", "x", "x"]):
            pass
    assert lim.inflight("x") == 0

"""API key files and the per-tenant in-flight limiter."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import pytest

from genret.api.auth import KeyRing, add_key, digest, key_from_metadata, parse_keys
from genret.api.limits import TenantLimiter
from genret.errors import FailedPrecondition, PermissionDenied, ResourceExhausted, Unauthenticated


def test_a_key_file_that_goes_missing_or_bad_fails_closed_after_the_grace_period(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    key = add_key(path, "app", ["acme"], admin=False)
    md = [("x-api-key", key)]
    ring = KeyRing(path, check_every_s=0.0, grace_s=0.3)
    good = path.read_text()
    for damage in (path.unlink, lambda: path.write_text("{not json")):
        damage()
        with pytest.raises(FailedPrecondition, match="cannot be read"):
            ring.reload()
        assert ring.authenticate(md).name == "app"  # the last good keys, for the grace period
        time.sleep(0.35)
        with pytest.raises(Unauthenticated, match="key file cannot be read"):
            ring.authenticate(md)
        path.write_text(good)
        assert ring.authenticate(md).name == "app"  # fixed: keys are accepted again
        assert ring.reload() == 1


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
    async def scenario() -> None:
        lim = TenantLimiter(per_tenant=2, total=3, wait_s=0.05)
        async with lim.admit(["a"]), lim.admit(["a"]):
            with pytest.raises(ResourceExhausted, match="tenant 'a'"):
                async with lim.admit(["a"]):
                    pass
            async with lim.admit(["b"]):
                with pytest.raises(ResourceExhausted, match="server"):
                    async with lim.admit(["c"]):
                        pass
        assert lim.inflight("a") == 0 and lim.inflight("b") == 0
        batches = TenantLimiter(per_tenant=1, total=2, wait_s=0.05)
        async with batches.admit(["x", "x", "x"]):  # a batch holds one slot of each tenant it names
            assert batches.inflight("x") == 1
            with pytest.raises(ResourceExhausted, match="tenant 'x'"):
                async with batches.admit(["x", "y"]):
                    pass
        assert batches.inflight("x") == 0

    asyncio.run(scenario())


def test_a_request_at_the_cap_waits_for_a_slot_to_free() -> None:
    async def scenario() -> None:
        lim = TenantLimiter(per_tenant=1, total=10, wait_s=5.0)
        order = []

        async def use(name: str, start: float) -> None:
            await asyncio.sleep(start)
            async with lim.admit(["a"]):
                order.append(f"{name} in")
                await asyncio.sleep(0.05)

        await asyncio.gather(use("first", 0), use("second", 0.01), use("third", 0.02))
        assert order == ["first in", "second in", "third in"]  # waiters get the slot in arrival order
        assert lim.inflight("a") == 0

    asyncio.run(scenario())

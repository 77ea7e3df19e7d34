"""API keys: which caller may use which tenants.

The key file is JSON and holds only SHA-256 digests of keys, never the keys:

    {"keys": [{"name": "acme-app", "sha256": "<hex>", "tenants": ["acme"]},
              {"name": "ops", "sha256": "<hex>", "admin": true}]}

A request carries its key as ``x-api-key: <key>``, Qdrant's ``api-key: <key>`` or ``authorization: Bearer
<key>`` metadata. A missing or unknown key is UNAUTHENTICATED; a known key naming a tenant it is not bound
to is PERMISSION_DENIED; management RPCs need an admin key (which may use every tenant). The file is re-read
when it changes (checked at most once a second) and on ``ReloadKeys``. A file that goes missing or does not parse fails
closed (``KeyRing``): ReloadKeys says why, and after a grace period no key is accepted until it is fixed.
Keys are compared as digests with ``hmac.compare_digest`` over every entry, and never logged.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from genret.errors import FailedPrecondition, PermissionDenied, Unauthenticated

log = logging.getLogger(__name__)
KEY_HEADER = "x-api-key"
QDRANT_KEY_HEADER = "api-key"  # what qdrant-client sends


@dataclass(frozen=True)
class Principal:
    name: str
    tenants: frozenset[str]
    admin: bool

    def check_tenant(self, tenant: str) -> None:
        if not (self.admin or tenant in self.tenants):
            raise PermissionDenied(f"key '{self.name}' may not use tenant '{tenant}'")

    def check_admin(self) -> None:
        if not self.admin:
            raise PermissionDenied(f"key '{self.name}' is not an admin key")


OPEN = Principal("anonymous", frozenset(), admin=True)  # when no key file is configured


def digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def new_key() -> str:
    return "gr_" + secrets.token_urlsafe(32)


def parse_keys(text: str) -> list[tuple[bytes, Principal]]:
    data = json.loads(text)
    entries = data.get("keys") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise ValueError('key file must be {"keys": [...]}')
    out = []
    for i, e in enumerate(entries):
        if not isinstance(e, dict) or not isinstance(e.get("sha256"), str) or len(e["sha256"]) != 64:
            raise ValueError(f"keys[{i}] needs a 64-hex-digit 'sha256'")
        tenants = e.get("tenants", [])
        if not isinstance(tenants, list) or not all(isinstance(t, str) and t for t in tenants):
            raise ValueError(f"keys[{i}].tenants must be a list of tenant names")
        admin = bool(e.get("admin", False))
        if not tenants and not admin:
            raise ValueError(f"keys[{i}] has neither tenants nor admin")
        out.append((bytes.fromhex(e["sha256"]), Principal(str(e.get("name", f"key{i}")), frozenset(tenants), admin)))
    return out


def add_key(path: str | Path, name: str, tenants: Iterable[str], admin: bool) -> str:
    """Append a new key to the file (created if absent); return the key, which is stored only as a digest."""
    path = Path(path)
    data = json.loads(path.read_text()) if path.exists() else {"keys": []}
    key = new_key()
    data["keys"].append({"name": name, "sha256": digest(key).hex(), "tenants": sorted(set(tenants)),
                         "admin": admin})
    parse_keys(json.dumps(data))  # refuse to write a file the server would reject
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.chmod(0o600)
    tmp.replace(path)
    return key


def key_from_metadata(metadata: Iterable[tuple[str, str | bytes]]) -> str | None:
    for k, v in metadata:
        value = v.decode() if isinstance(v, bytes) else v
        if k.lower() in (KEY_HEADER, QDRANT_KEY_HEADER):
            return value
        if k.lower() == "authorization" and value.lower().startswith("bearer "):
            return value[7:].strip()
    return None


class KeyRing:
    """The key file's principals, re-read when the file changes.

    A file that goes missing or stops parsing fails closed: ``reload`` raises FailedPrecondition with the
    reason at once, the last good keys stay valid for ``grace_s`` seconds (time to finish replacing the
    file), and after that every key is refused until the file reads again.
    """

    def __init__(self, path: str | Path, check_every_s: float = 1.0, grace_s: float = 10.0) -> None:
        self.path = Path(path)
        self._check_every = check_every_s
        self._grace = grace_s
        self._lock = threading.Lock()
        self._entries: list[tuple[bytes, Principal]] = []
        self._stamp: tuple[int, int] | None = None
        self._checked = 0.0
        self._broken: tuple[float, str] | None = None  # (since, why) while the file cannot be read
        try:
            self._read()
        except (OSError, ValueError) as exc:
            raise ValueError(f"API key file {self.path}: {exc}") from exc

    def __len__(self) -> int:
        return len(self._entries)

    def _read(self) -> int:
        st = self.path.stat()
        entries = parse_keys(self.path.read_text())
        self._entries, self._stamp, self._broken = entries, (st.st_mtime_ns, st.st_size), None
        log.info("loaded %d API keys from %s", len(entries), self.path)
        return len(entries)

    def _fail(self, exc: Exception) -> FailedPrecondition:
        since = self._broken[0] if self._broken else time.monotonic()
        self._broken = (since, str(exc))
        log.error("API key file %s cannot be read (%s): keys are refused %.0f s after the first failure",
                  self.path, exc, self._grace)
        return FailedPrecondition(f"API key file {self.path} cannot be read: {exc}; every key is refused "
                                  f"{self._grace:g} s after it first failed, until the file reads again")

    def reload(self) -> int:
        """Re-read the file now; the number of keys, or FailedPrecondition saying why it does not read."""
        with self._lock:
            self._checked = time.monotonic()
            try:
                return self._read()
            except (OSError, ValueError) as exc:
                raise self._fail(exc) from exc

    def _maybe_reload(self) -> None:
        with self._lock:
            now = time.monotonic()
            if now - self._checked < self._check_every:
                return
            self._checked = now
            try:
                st = self.path.stat()
                if self._broken is None and (st.st_mtime_ns, st.st_size) == self._stamp:
                    return
                self._read()
            except (OSError, ValueError) as exc:
                self._fail(exc)

    def authenticate(self, metadata: Iterable[tuple[str, str | bytes]]) -> Principal:
        key = key_from_metadata(metadata)
        if not key:
            raise Unauthenticated("missing API key (x-api-key, api-key or authorization: Bearer metadata)")
        self._maybe_reload()
        broken = self._broken
        if broken is not None and time.monotonic() - broken[0] >= self._grace:
            raise Unauthenticated(f"no API key is accepted: the server's key file cannot be read ({broken[1]})")
        presented = digest(key)
        found: Principal | None = None
        for stored, principal in self._entries:  # no early exit: time does not depend on the match
            if hmac.compare_digest(stored, presented):
                found = principal
        if found is None:
            raise Unauthenticated("unknown API key")
        return found

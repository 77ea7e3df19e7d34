"""One log line per RPC: request id, service, method, tenant, mode, status and latency.

The request id is the caller's ``x-request-id`` metadata when it sends one (printable, at most 128
characters), else a new one; it is returned in the trailing metadata as ``x-request-id``. Handlers add
what they know (tenant, mode, the query text) with ``note``; the query text is logged only with
``--log-queries``, and no key is ever logged. With ``--log-format json`` every log line is one JSON
object (``JsonFormatter``).
"""

from __future__ import annotations

import contextvars
import json
import logging
import uuid
from collections.abc import Sequence
from typing import Any

log = logging.getLogger("genret.access")
REQUEST_ID = "x-request-id"
_FIELDS: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("genret_request", default=None)


def request_id(metadata: Sequence[tuple[str, str | bytes]]) -> str:
    for k, v in metadata:
        if k.lower() == REQUEST_ID:
            value = v.decode(errors="replace") if isinstance(v, bytes) else v
            if 0 < len(value) <= 128 and value.isprintable():
                return value
    return uuid.uuid4().hex[:16]


def start(rid: str) -> dict[str, Any]:
    """A new request's fields, visible to ``note`` in this task."""
    fields: dict[str, Any] = {"request_id": rid}
    _FIELDS.set(fields)
    return fields


def note(**fields: Any) -> None:
    """Add to the current request's log line (no-op outside a request)."""
    current = _FIELDS.get()
    if current is not None:
        current.update({k: v for k, v in fields.items() if v is not None})


def current_id() -> str | None:
    current = _FIELDS.get()
    return None if current is None else str(current.get("request_id"))


def finish(fields: dict[str, Any], service: str, method: str, status: str, seconds: float,
           log_queries: bool) -> None:
    line = {**fields, "service": service, "method": method, "status": status, "latency_ms": round(seconds * 1e3, 3)}
    if not log_queries:
        line.pop("query", None)
    log.info("rpc %s", " ".join(f"{k}={v}" for k, v in line.items()), extra={"rpc": line})


class JsonFormatter(logging.Formatter):
    """Each record as one JSON object: time, level, logger, message, and an RPC's fields when it has them."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {"ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"), "level": record.levelname,
                               "logger": record.name, "message": record.getMessage()}
        rpc = getattr(record, "rpc", None)
        if isinstance(rpc, dict):
            out.update(rpc, message="rpc")
        if record.exc_info:
            out["error"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)

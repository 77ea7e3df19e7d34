"""Faults for tests and the load harness: an embedded Qdrant that fails like a stopped server.

The embedded Qdrant runs inside the sidecar's process and cannot be stopped on its own, so an outage is
made at the client: while the outage is on (``down`` set, or the switch file present) every call raises
``ConnectionRefusedError``, which is what a stopped server's client raises; calls made while it is off go
to the real embedded Qdrant untouched.
"""

from __future__ import annotations

import os
from typing import Any

from qdrant_client import QdrantClient


class OutageClient:
    """A ``QdrantClient`` whose calls fail while an outage is on."""

    def __init__(self, client: QdrantClient, switch_file: str = "") -> None:
        self._client = client
        self._switch_file = switch_file
        self.down = False

    @property
    def is_down(self) -> bool:
        return self.down or bool(self._switch_file and os.path.exists(self._switch_file))

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            if self.is_down:
                raise ConnectionRefusedError(f"[Errno 111] Connection refused (Qdrant stopped; {name})")
            return attr(*args, **kwargs)

        call.__name__ = name
        return call

    def close(self) -> None:
        self._client.close()


def outage_store(config: Any, switch_file: str = "") -> Any:
    """A ``QdrantStore`` on the embedded Qdrant at ``config.qdrant_path`` whose client an outage can stop."""
    from genret.store import QdrantStore

    return QdrantStore(config, client=OutageClient(QdrantClient(path=config.qdrant_path), switch_file))  # type: ignore[arg-type]


"""genret: generative retrieval served as a gRPC sidecar beside Qdrant."""

from __future__ import annotations

__version__ = "0.1.0"

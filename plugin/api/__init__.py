"""The API layer: gRPC servers, authentication, admission limits, fair batching and the proto <-> domain
conversions. Nothing under ``genret.api`` imports torch: it talks to the engine through ``genret.types``."""

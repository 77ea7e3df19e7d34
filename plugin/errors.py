"""Domain errors. The servicer maps each class to one gRPC status code."""

from __future__ import annotations


class GenretError(Exception):
    """Base class of errors a caller can act on."""


class InvalidArgument(GenretError):
    """The request is malformed or a value is out of range."""


class NotFound(GenretError):
    """A named tenant, index or document does not exist."""


class Unauthenticated(GenretError):
    """The caller presented no valid credentials."""


class PermissionDenied(GenretError):
    """The caller's credentials do not cover the named tenant or operation."""


class ResourceExhausted(GenretError):
    """A queue or concurrency limit is reached; retry later."""


class DeadlineExceeded(GenretError):
    """The request's deadline passed before the work finished."""


class Unavailable(GenretError):
    """A dependency (Qdrant, the model) cannot serve right now."""


class Unimplemented(GenretError):
    """The requested feature is not offered by this server."""


class FailedPrecondition(GenretError):
    """The system is not in the state the request needs (e.g. no dense vectors in the collection)."""

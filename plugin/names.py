"""Tenant names and document ids: the one place that says which are valid.

Both are 1 to 256 characters with no control characters (Unicode category Cc: U+0000-U+001F and
U+007F-U+009F). A point id is derived from the pair joined by NUL (``genret.store.point_id_for``), so with
NUL excluded from both no two pairs can give the same point id.
"""

from __future__ import annotations

import unicodedata

from genret.errors import InvalidArgument

MAX_NAME_CHARS = 256


def _problem(value: str) -> str | None:
    if not value:
        return "is empty"
    if len(value) > MAX_NAME_CHARS:
        return f"has {len(value)} characters; the limit is {MAX_NAME_CHARS}"
    bad = next((c for c in value if unicodedata.category(c) == "Cc"), None)
    if bad is not None:
        return f"contains the control character U+{ord(bad):04X}"
    return None


def check_tenant(tenant: str) -> str:
    """``tenant`` if it is a valid tenant name; InvalidArgument saying why not otherwise."""
    problem = _problem(tenant)
    if problem == "is empty":
        raise InvalidArgument("tenant is required")
    if problem:
        raise InvalidArgument(f"tenant name {problem}")
    return tenant


def check_doc_id(doc_id: str, where: str = "document id") -> str:
    """``doc_id`` if it is a valid document id; InvalidArgument naming ``where`` otherwise."""
    problem = _problem(doc_id)
    if problem:
        raise InvalidArgument(f"{where} {problem}")
    return doc_id

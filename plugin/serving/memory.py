"""Handing freed heap memory back to the operating system after a large write.

glibc keeps freed blocks in its arenas, so a process that once held a large request stays that large.
``malloc_trim(0)`` returns what is free; elsewhere (other C libraries) this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from functools import cache


@cache
def _trim() -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    name = ctypes.util.find_library("c")
    if not name:
        return None
    fn = getattr(ctypes.CDLL(name), "malloc_trim", None)
    return fn


def return_freed_memory() -> None:
    trim = _trim()
    if trim is not None:
        trim(0)

"""Progress bars that stay readable in logs: frequent on a terminal, every 30 s otherwise."""

from __future__ import annotations

import sys


def progress_interval() -> float:
    """tqdm ``mininterval`` for the current stderr."""
    return 0.5 if sys.stderr.isatty() else 30.0

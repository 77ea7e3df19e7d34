"""Constrained-decoding ops: Triton kernels and their torch references behind one dispatcher."""

from __future__ import annotations

from genret.kernels.dispatch import (
    BACKENDS,
    SCORING,
    TRITON_MAX_CHILDREN,
    RowTopK,
    StepResult,
    row_topk,
    row_topk_children,
    trie_beam_step,
    trie_beam_step_children,
)

__all__ = ["BACKENDS", "SCORING", "TRITON_MAX_CHILDREN", "RowTopK", "StepResult", "row_topk", "row_topk_children",
           "trie_beam_step", "trie_beam_step_children"]

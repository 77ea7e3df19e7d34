"""The one place that picks a backend for each constrained-decoding op.

``auto`` runs the Triton kernels on CUDA tensors and the torch references elsewhere (on a CPU the
Triton kernels only run under ``TRITON_INTERPRET=1``, which tests use and serving should not).
"""

from __future__ import annotations

import os

import torch

from genret.kernels.reference import (
    RowTopK,
    StepResult,
    beam_select_torch,
    row_topk_children_torch,
    row_topk_torch,
    row_width,
)

BACKENDS = ("auto", "triton", "torch")
SCORING = ("vocab", "children")


def _use_triton(backend: str, device: torch.device) -> bool:
    if backend not in BACKENDS:
        raise ValueError(f"unknown kernel backend {backend!r}; valid: {', '.join(BACKENDS)}")
    if backend == "torch":
        return False
    if backend == "triton":
        if device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
            raise ValueError("the triton backend needs CUDA tensors (or TRITON_INTERPRET=1)")
        return True
    return device.type == "cuda"


def trie_beam_step(logits: torch.Tensor, beam_scores: torch.Tensor, nodes: torch.Tensor, done: torch.Tensor,
                   row_ptr: torch.Tensor, child_token: torch.Tensor, live: torch.Tensor, num_roots: int,
                   max_children: int, beams_in: int, k: int, backend: str = "auto") -> StepResult:
    """One constrained beam step, scoring mode ``vocab``: ``row_topk`` then ``beam_select``."""
    width = row_width(k, max_children)
    if _use_triton(backend, logits.device):
        from genret.kernels.triton_ops import beam_select_triton, row_topk_triton

        row = row_topk_triton(logits, beam_scores, nodes, done, row_ptr, child_token, live, num_roots, width,
                              max_children)
        return beam_select_triton(row, beams_in, k)
    row = row_topk_torch(logits, beam_scores, nodes, done, row_ptr, child_token, live, num_roots, width)
    return beam_select_torch(row, beams_in, k)


def trie_beam_step_children(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                            beam_scores: torch.Tensor, nodes: torch.Tensor, done: torch.Tensor,
                            row_ptr: torch.Tensor, child_token: torch.Tensor, live: torch.Tensor,
                            num_roots: int, max_children: int, beams_in: int, k: int,
                            backend: str = "auto") -> StepResult:
    """One constrained beam step, scoring mode ``children``: logits only for the allowed children."""
    width = row_width(k, max_children)
    if _use_triton(backend, hidden.device):
        from genret.kernels.triton_ops import beam_select_triton, row_topk_children_triton

        row = row_topk_children_triton(hidden, weight, bias, beam_scores, nodes, done, row_ptr, child_token,
                                       live, num_roots, width, max_children)
        return beam_select_triton(row, beams_in, k)
    row = row_topk_children_torch(hidden, weight, bias, beam_scores, nodes, done, row_ptr, child_token, live,
                                  num_roots, width)
    return beam_select_torch(row, beams_in, k)


__all__ = ["BACKENDS", "SCORING", "RowTopK", "StepResult", "trie_beam_step", "trie_beam_step_children"]

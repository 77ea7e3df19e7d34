"""The one place that picks a backend for each constrained-decoding op.

``auto`` runs the Triton kernels on CUDA tensors and the torch references elsewhere; ``triton`` runs the
Triton kernels whatever the device (on a CPU only Triton's interpreter can run them, which tests use and
serving should not); ``torch`` runs the references. The Triton row kernel holds a node's children in one
block, so a trie whose widest node has more than ``TRITON_MAX_CHILDREN`` children (an atomic index's root
over many documents) runs the torch ops whatever the backend. The dispatcher reads no settings of its own:
the caller passes the backend.
"""

from __future__ import annotations

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
TRITON_MAX_CHILDREN = 16384


def _use_triton(backend: str, device: torch.device, max_children: int = 0) -> bool:
    if backend not in BACKENDS:
        raise ValueError(f"unknown kernel backend {backend!r}; valid: {', '.join(BACKENDS)}")
    if backend == "torch" or max_children > TRITON_MAX_CHILDREN:
        return False
    return backend == "triton" or device.type == "cuda"


def row_topk(logits: torch.Tensor, beam_scores: torch.Tensor, nodes: torch.Tensor, done: torch.Tensor,
             row_ptr: torch.Tensor, child_token: torch.Tensor, live: torch.Tensor, num_roots: int, width: int,
             max_children: int, backend: str = "auto") -> RowTopK:
    """Each row's best ``width`` live children by beam score + log-softmax(logits) (scoring ``vocab``)."""
    if _use_triton(backend, logits.device, max_children):
        from genret.kernels.triton_ops import row_topk_triton

        return row_topk_triton(logits, beam_scores, nodes, done, row_ptr, child_token, live, num_roots, width,
                               max_children)
    return row_topk_torch(logits, beam_scores, nodes, done, row_ptr, child_token, live, num_roots, width)


def row_topk_children(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                      beam_scores: torch.Tensor, nodes: torch.Tensor, done: torch.Tensor, row_ptr: torch.Tensor,
                      child_token: torch.Tensor, live: torch.Tensor, num_roots: int, width: int,
                      max_children: int, backend: str = "auto") -> RowTopK:
    """Each row's best ``width`` live children, logits computed for those children only (scoring ``children``)."""
    if _use_triton(backend, hidden.device, max_children):
        from genret.kernels.triton_ops import row_topk_children_triton

        return row_topk_children_triton(hidden, weight, bias, beam_scores, nodes, done, row_ptr, child_token, live,
                                        num_roots, width, max_children)
    return row_topk_children_torch(hidden, weight, bias, beam_scores, nodes, done, row_ptr, child_token, live,
                                   num_roots, width)


def trie_beam_step(logits: torch.Tensor, beam_scores: torch.Tensor, nodes: torch.Tensor, done: torch.Tensor,
                   row_ptr: torch.Tensor, child_token: torch.Tensor, live: torch.Tensor, num_roots: int,
                   max_children: int, beams_in: int, k: int, backend: str = "auto") -> StepResult:
    """One constrained beam step, scoring mode ``vocab``: ``row_topk`` then ``beam_select``."""
    row = row_topk(logits, beam_scores, nodes, done, row_ptr, child_token, live, num_roots,
                   row_width(k, max_children), max_children, backend)
    return _beam_select(row, beams_in, k, backend)


def trie_beam_step_children(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                            beam_scores: torch.Tensor, nodes: torch.Tensor, done: torch.Tensor,
                            row_ptr: torch.Tensor, child_token: torch.Tensor, live: torch.Tensor,
                            num_roots: int, max_children: int, beams_in: int, k: int,
                            backend: str = "auto") -> StepResult:
    """One constrained beam step, scoring mode ``children``: logits only for the allowed children."""
    row = row_topk_children(hidden, weight, bias, beam_scores, nodes, done, row_ptr, child_token, live, num_roots,
                            row_width(k, max_children), max_children, backend)
    return _beam_select(row, beams_in, k, backend)


def _beam_select(row: RowTopK, beams_in: int, k: int, backend: str) -> StepResult:
    if _use_triton(backend, row.scores.device):
        from genret.kernels.triton_ops import beam_select_triton

        return beam_select_triton(row, beams_in, k)
    return beam_select_torch(row, beams_in, k)


__all__ = ["BACKENDS", "SCORING", "TRITON_MAX_CHILDREN", "RowTopK", "StepResult", "row_topk", "row_topk_children",
           "trie_beam_step", "trie_beam_step_children"]

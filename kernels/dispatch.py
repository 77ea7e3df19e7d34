"""The one place that picks a backend for each constrained-decoding op."""

from __future__ import annotations

import torch

from genret.kernels.reference import StepResult, trie_beam_step_torch

BACKENDS = ("auto", "torch")


def trie_beam_step(logits: torch.Tensor, beam_scores: torch.Tensor, nodes: torch.Tensor, done: torch.Tensor,
                   row_ptr: torch.Tensor, child_token: torch.Tensor, child_node: torch.Tensor,
                   live: torch.Tensor, beams_in: int, k: int, backend: str = "auto") -> StepResult:
    """Fused constrained beam step (see ``trie_beam_step_torch`` for the semantics)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown kernel backend {backend!r}; valid: {', '.join(BACKENDS)}")
    return trie_beam_step_torch(logits, beam_scores, nodes, done, row_ptr, child_token, child_node, live,
                                beams_in, k)


__all__ = ["BACKENDS", "StepResult", "trie_beam_step"]

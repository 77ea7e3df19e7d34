"""Constrained-decoding ops: each as a torch reference (the spec) behind one dispatcher."""

from __future__ import annotations

from genret.kernels.dispatch import BACKENDS, StepResult, trie_beam_step

__all__ = ["BACKENDS", "StepResult", "trie_beam_step"]

"""Beam search constrained to a trie forest: it can only produce docids that exist.

Score of a docid = its sequence log-probability under the model, sum over its tokens (EOS included) of
log_softmax over the docid vocabulary. A finished beam keeps its score and competes with unfinished ones,
so with ``beams`` at least the number of docids the search is exhaustive (equals brute-force scoring).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from genret.errors import DeadlineExceeded
from genret.kernels import trie_beam_step
from genret.modeling import EncodedQueries, Seq2SeqBackend
from genret.trie import DeviceForest

EOS = 1
PAD = 0


@dataclass(frozen=True)
class BeamResult:
    leaves: torch.Tensor  # (batch, beams) trie leaf node per hypothesis; -1 when none
    scores: torch.Tensor  # (batch, beams) log-probabilities, descending; -inf when none


def constrained_beam_search(backend: Seq2SeqBackend, enc: EncodedQueries, roots: torch.Tensor,
                            forest: DeviceForest, beams: int, deadline: float | None = None,
                            kernel_backend: str = "auto") -> BeamResult:
    """Decode each query (row of ``enc``) from its own root in the forest (rows may mix tenants)."""
    batch = roots.shape[0]
    device = backend.device
    rows = batch * beams
    nodes = roots.to(device).repeat_interleave(beams)  # (rows,)
    scores = torch.full((batch, beams), float("-inf"), device=device)
    scores[:, 0] = 0.0
    scores = scores.view(rows)
    done = torch.zeros(rows, dtype=torch.bool, device=device)
    state = backend.start(enc, beams)
    tokens: torch.Tensor | None = None
    base = (torch.arange(batch, device=device) * beams).unsqueeze(1)  # (batch, 1)
    for _ in range(forest.max_depth):
        if deadline is not None and time.monotonic() > deadline:
            raise DeadlineExceeded("deadline passed during decoding")
        logits = backend.step(state, tokens)  # (rows, V)
        res = trie_beam_step(logits, scores, nodes, done, forest.row_ptr, forest.child_token,
                             forest.child_node, forest.live, beams, beams, backend=kernel_backend)
        backend.reorder(state, (base + res.parents).view(rows))
        scores, nodes, tokens = res.scores.view(rows), res.nodes.view(rows), res.tokens.view(rows)
        done = (tokens == PAD) | (tokens == EOS) | (scores == float("-inf"))
        if bool(done.all()):
            break
    finished = (tokens == EOS) | (tokens == PAD) if tokens is not None else done
    valid = finished & (scores > float("-inf"))
    leaves = torch.where(valid, nodes, torch.full_like(nodes, -1)).view(batch, beams)
    scores = torch.where(valid, scores, torch.full_like(scores, float("-inf"))).view(batch, beams)
    return BeamResult(leaves, scores)

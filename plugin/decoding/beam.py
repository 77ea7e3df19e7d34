"""Beam search constrained to a trie forest: it can only produce docids that exist.

The loop: encode once (by the caller), then per step one decoder call with the KV cache, one fused
constrained step (``genret.kernels``), one cache reorder; it stops when every beam has ended.

Scoring modes (``SCORING``):
* ``vocab``: a docid's score is its sequence log-probability, sum over its tokens (EOS included) of
  log_softmax over the docid vocabulary of the caller's namespace. Logits are computed for the docid
  vocabulary only. Where docid tokens belong to documents (atomic docids; ``owner`` gives each token's
  tenant root) the softmax covers only the caller's own tokens and EOS, so no other tenant's documents
  enter a score; other schemes spell docids with a shared alphabet fixed when the index is built, which
  no write changes.
* ``children``: logits only for the children the trie allows at each step, log_softmax over those:
  the log-probability of the docid given that it exists in the caller's namespace. Nothing the trie
  forbids is computed.
A finished beam keeps its score and competes with unfinished ones, so with ``beams`` at least the number
of docids the search is exhaustive (in ``vocab`` mode it equals brute-force scoring).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from genret.decoding.model import DocidHead, EncodedQueries, Seq2SeqBackend
from genret.decoding.trie import DeviceForest
from genret.docids import EVERY_TENANT
from genret.errors import DeadlineExceeded
from genret.kernels import SCORING, StepResult, trie_beam_step, trie_beam_step_children
from genret.kernels.reference import row_topk_children_torch, row_topk_torch
from genret.types import Checkpoint

EOS = 1
PAD = 0
NEG_INF = float("-inf")

# (features (rows, H), beam scores, nodes, done (rows,)) -> the step's new beams
StepFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], StepResult]


@dataclass(frozen=True)
class BeamResult:
    leaves: torch.Tensor  # (batch, beams) trie leaf node per hypothesis; -1 when none
    scores: torch.Tensor  # (batch, beams) log-probabilities, descending; -inf when none
    steps: int  # decoder steps run


def _decode(backend: Seq2SeqBackend, enc: EncodedQueries, start_nodes: torch.Tensor, beams: int,
            max_steps: int, step_fn: StepFn, deadline: float | None, checkpoint: Checkpoint | None = None
            ) -> BeamResult:
    batch = start_nodes.shape[0]
    device = backend.device
    rows = batch * beams
    nodes = start_nodes.to(device).long().repeat_interleave(beams)  # (rows,)
    scores = torch.full((batch, beams), NEG_INF, device=device)
    scores[:, 0] = 0.0
    scores = scores.view(rows)
    done = torch.zeros(rows, dtype=torch.bool, device=device)
    state = backend.start(enc, beams)
    tokens: torch.Tensor | None = None
    base = (torch.arange(batch, device=device) * beams).unsqueeze(1)  # (batch, 1)
    steps = 0
    for steps in range(1, max_steps + 1):  # noqa: B007
        if checkpoint is not None:
            checkpoint()
        if deadline is not None and time.monotonic() > deadline:
            raise DeadlineExceeded("deadline passed during decoding")
        features = backend.step(state, tokens)  # (rows, H)
        res = step_fn(features, scores, nodes, done)
        backend.reorder(state, (base + res.parents).view(rows))
        scores, nodes, tokens = res.scores.view(rows), res.nodes.view(rows), res.tokens.view(rows)
        done = (tokens == PAD) | (tokens == EOS) | (scores == NEG_INF)
        if bool(done.all()):
            break
    valid = done & (scores > NEG_INF)
    leaves = torch.where(valid, nodes, -1).view(batch, beams)
    return BeamResult(leaves, torch.where(valid, scores, NEG_INF).view(batch, beams), steps)


def own_vocabulary(logits: torch.Tensor, owner: torch.Tensor | None, row_roots: torch.Tensor) -> torch.Tensor:
    """``logits`` (rows, V) with every token that is not the row's tenant's (``owner[token]`` is another
    root, or -1) set to -inf, so a log-softmax over the row normalises over the tenant's tokens only.
    owner: (V,) tenant root of each token, EVERY_TENANT for PAD and EOS; None: every token is shared."""
    if owner is None:
        return logits
    allowed = (owner[None, :] == row_roots[:, None]) | (owner[None, :] == EVERY_TENANT)  # (rows, V)
    return logits.masked_fill(~allowed, NEG_INF)


def constrained_beam_search(backend: Seq2SeqBackend, enc: EncodedQueries, roots: torch.Tensor,
                            forest: DeviceForest, beams: int, deadline: float | None = None,
                            kernel_backend: str = "auto", scoring: str = "vocab",
                            owner: torch.Tensor | None = None, checkpoint: Checkpoint | None = None) -> BeamResult:
    """Decode each query (row of ``enc``) from its own root in the forest (rows may mix tenants).
    ``owner``: the tenant root of each docid token, where tokens are documents (see ``own_vocabulary``);
    ``checkpoint``: called before each step (the scheduler may run other work there)."""
    if scoring not in SCORING:
        raise ValueError(f"unknown scoring mode {scoring!r}; valid: {', '.join(SCORING)}")
    head = backend.head
    f = forest
    row_roots = roots.to(backend.device).long().repeat_interleave(beams)  # (batch*beams,)

    def step(features: torch.Tensor, scores: torch.Tensor, nodes: torch.Tensor, done: torch.Tensor) -> StepResult:
        if scoring == "children":
            return trie_beam_step_children(features, head.weight, head.bias, scores, nodes, done, f.row_ptr,
                                           f.child_token, f.live, f.num_roots, f.max_children, beams, beams,
                                           backend=kernel_backend)
        return trie_beam_step(own_vocabulary(head.logits(features), owner, row_roots), scores, nodes, done,
                              f.row_ptr, f.child_token, f.live, f.num_roots, f.max_children, beams, beams,
                              backend=kernel_backend)

    return _decode(backend, enc, roots, beams, forest.max_depth, step, deadline, checkpoint)


@torch.inference_mode()
def score_docids(backend: Seq2SeqBackend, enc: EncodedQueries, roots: torch.Tensor, forest: DeviceForest,
                 tokens: torch.Tensor, scoring: str = "vocab", deadline: float | None = None,
                 owner: torch.Tensor | None = None, checkpoint: Checkpoint | None = None) -> torch.Tensor:
    """Teacher-forced scoring: the score beam search gives each of the given docids (same scoring mode,
    same trie), without searching.

    tokens: (batch, C, L) docid rows (tokens, EOS, PAD) to score for each query (row of ``enc``) from its
    root. Returns (batch, C) log-probabilities; -inf for a row that is not a live docid under that root.
    """
    if scoring not in SCORING:
        raise ValueError(f"unknown scoring mode {scoring!r}; valid: {', '.join(SCORING)}")
    batch, cands, width = tokens.shape
    rows = batch * cands
    device = backend.device
    want_all = tokens.to(device).long().reshape(rows, width)
    nodes = roots.to(device).long().repeat_interleave(cands)
    row_roots = nodes.clone()
    scores = torch.zeros(rows, device=device)
    done = torch.zeros(rows, dtype=torch.bool, device=device)
    state = backend.start(enc, cands)
    head, f = backend.head, forest
    every = max(1, f.max_children)  # all of a row's children, so the wanted one is among them
    prev: torch.Tensor | None = None
    for t in range(width):
        if checkpoint is not None:
            checkpoint()
        if deadline is not None and time.monotonic() > deadline:
            raise DeadlineExceeded("deadline passed during scoring")
        features = backend.step(state, prev)
        if scoring == "children":
            row = row_topk_children_torch(features, head.weight, head.bias, scores, nodes, done, f.row_ptr,
                                          f.child_token, f.live, f.num_roots, every)
        else:
            row = row_topk_torch(own_vocabulary(head.logits(features), owner, row_roots), scores, nodes, done,
                                 f.row_ptr, f.child_token, f.live, f.num_roots, every)
        want = want_all[:, t]
        match = (row.tokens == want[:, None]) & (row.scores > NEG_INF)
        found = match.any(dim=1)
        col = match.int().argmax(dim=1, keepdim=True)
        scores = torch.where(found, row.scores.gather(1, col)[:, 0], NEG_INF)
        nodes = torch.where(found, row.nodes.gather(1, col)[:, 0], -1)
        done = (want == PAD) | (want == EOS) | ~found
        prev = want
        if bool(done.all()):
            break
    return scores.view(batch, cands)


def free_step(head: DocidHead, features: torch.Tensor, scores: torch.Tensor, done: torch.Tensor,
              beams: int) -> StepResult:
    """An unconstrained beam step over the docid vocabulary (the baseline that measures the trie's cost)."""
    logp = torch.log_softmax(head.logits(features).float(), dim=-1)  # (rows, V)
    vocab = logp.shape[1]
    cand = scores[:, None] + logp
    cand = torch.where(done[:, None], NEG_INF, cand)
    cand[:, PAD] = torch.where(done & (scores > NEG_INF), scores, cand[:, PAD])
    top = cand.view(-1, beams * vocab).topk(beams, dim=1)
    tokens = top.indices % vocab
    return StepResult(top.values, tokens, torch.zeros_like(tokens), top.indices // vocab)


def unconstrained_beam_search(backend: Seq2SeqBackend, enc: EncodedQueries, beams: int,
                              max_steps: int) -> BeamResult:
    """The same loop with no trie (any token sequence): what the constraint is measured against."""
    head = backend.head
    batch = enc.hidden.shape[0]

    def step(features: torch.Tensor, scores: torch.Tensor, nodes: torch.Tensor, done: torch.Tensor) -> StepResult:
        return free_step(head, features, scores, done, beams)

    return _decode(backend, enc, torch.zeros(batch, dtype=torch.long), beams, max_steps, step, None)

"""Beam search constrained to a trie forest: it can only produce docids that exist.

The loop: encode once (by the caller), then per step one decoder call with the KV cache, one fused
constrained step (``genret.kernels``), one cache reorder; it stops when every beam has ended.

Scoring modes (``SCORING``):
* ``vocab``: a docid's score is its sequence log-probability, sum over its tokens (EOS included) of
  log_softmax over the docid vocabulary of the caller's namespace. Logits are computed for the docid
  vocabulary only. Where docid tokens belong to documents (atomic docids; ``Trie.own_tokens`` lists the
  tenant's) the softmax covers only the caller's own tokens and EOS, so no other tenant's documents
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from genret.decoding.model import DocidHead, EncodedQueries, Seq2SeqBackend
from genret.decoding.trie import DeviceForest
from genret.errors import DeadlineExceeded
from genret.kernels import SCORING, StepResult, row_topk, row_topk_children, trie_beam_step, trie_beam_step_children
from genret.metrics import DECODE_STEPS
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


def start_beams(starts: Sequence[Sequence[int]], beams: int,
                device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``starts[q]``: the nodes query ``q`` starts from, one beam each (at most ``beams`` of them).
    Returns the beams' nodes and scores (batch * beams,): 0 at a start node, -inf for an empty beam."""
    batch = len(starts)
    first = torch.zeros((batch, beams), dtype=torch.long)
    begin = torch.full((batch, beams), NEG_INF)
    for q, nodes_q in enumerate(starts):
        if len(nodes_q) > beams:
            raise ValueError(f"{len(nodes_q)} start nodes need at least as many beams, got {beams}")
        first[q, : len(nodes_q)] = torch.as_tensor(list(nodes_q), dtype=torch.long)
        begin[q, : len(nodes_q)] = 0.0
    return first.to(device).view(-1), begin.to(device).view(-1)


def run_beams(backend: Seq2SeqBackend, enc: EncodedQueries, nodes: torch.Tensor, scores: torch.Tensor, beams: int,
              max_steps: int, step_fn: StepFn, deadline: float | None = None, checkpoint: Checkpoint | None = None,
              until_done: bool = True) -> BeamResult:
    """The decoding loop from the beams ``start_beams`` gives. ``until_done``: stop at the first step after
    which every beam has ended (one host sync per step); False runs all ``max_steps`` with no sync, which
    gives the same result (an ended beam carries itself) and lets the loop be captured as a CUDA graph."""
    rows = nodes.shape[0]
    batch = rows // beams
    device = backend.device
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
        DECODE_STEPS.inc()
        features = backend.step(state, tokens)  # (rows, H)
        res = step_fn(features, scores, nodes, done)
        backend.reorder(state, (base + res.parents).view(rows))
        scores, nodes, tokens = res.scores.view(rows), res.nodes.view(rows), res.tokens.view(rows)
        done = (tokens == PAD) | (tokens == EOS) | (scores == NEG_INF)
        if until_done and bool(done.all()):
            break
    valid = done & (scores > NEG_INF)
    leaves = torch.where(valid, nodes, -1).view(batch, beams)
    return BeamResult(leaves, torch.where(valid, scores, NEG_INF).view(batch, beams), steps)


@dataclass(frozen=True)
class Trie:
    """What decoding reads for one query: a forest on the decoding device, the roots to decode from, and,
    where docid tokens are documents (atomic docids), the tokens that are the tenant's own (None: docids
    are spelled with an alphabet every tenant shares)."""

    forest: DeviceForest
    roots: tuple[int, ...] = (0,)  # a query starts one beam at each (a tenant's trie may come in parts)
    own_tokens: torch.Tensor | None = None  # (n,) int64 on the decoding device


def own_vocabulary(logits: torch.Tensor, allowed: torch.Tensor | None) -> torch.Tensor:
    """``logits`` (rows, V) with every token outside ``allowed`` (V,) set to -inf, so a log-softmax over a
    row normalises over the tenant's own tokens only; None: every token is shared."""
    return logits if allowed is None else logits.masked_fill(~allowed, NEG_INF)


def allowed_tokens(trie: Trie, vocab: int, device: torch.device) -> torch.Tensor | None:
    """(V,) bool: PAD, EOS and the trie's own tokens; None when its tokens are a shared alphabet."""
    if trie.own_tokens is None:
        return None
    allowed = torch.zeros(vocab, dtype=torch.bool, device=device)
    allowed[[PAD, EOS]] = True
    allowed[trie.own_tokens.to(device)] = True
    return allowed


@dataclass(frozen=True)
class _Group:
    """Queries decoded against one forest: their indices, their beam rows, the forest and token mask."""

    queries: torch.Tensor  # (q,) query indices
    rows: torch.Tensor  # (q * beams,) beam rows
    forest: DeviceForest
    allowed: torch.Tensor | None


def _groups(tries: Sequence[Trie], beams: int, vocab: int, device: torch.device) -> list[_Group]:
    """Queries sharing a forest (and token set) are decoded by one kernel call per step."""
    by_key: dict[tuple[int, int], list[int]] = {}
    for i, t in enumerate(tries):
        by_key.setdefault((id(t.forest), id(t.own_tokens)), []).append(i)
    out = []
    for idx in by_key.values():
        q = torch.tensor(idx, dtype=torch.long, device=device)
        rows = (q[:, None] * beams + torch.arange(beams, device=device)).reshape(-1)
        out.append(_Group(q, rows, tries[idx[0]].forest, allowed_tokens(tries[idx[0]], vocab, device)))
    return out


def trie_step_fn(backend: Seq2SeqBackend, tries: Sequence[Trie], beams: int, kernel_backend: str = "auto",
                 scoring: str = "vocab") -> StepFn:
    """The constrained step for queries decoding under ``tries`` (one per query; rows may mix tenants, and
    so forests): queries sharing a forest are stepped by one kernel call."""
    if scoring not in SCORING:
        raise ValueError(f"unknown scoring mode {scoring!r}; valid: {', '.join(SCORING)}")
    head = backend.head
    groups = _groups(tries, beams, head.weight.shape[0], backend.device)

    def one(g: _Group, features: torch.Tensor, scores: torch.Tensor, nodes: torch.Tensor,
            done: torch.Tensor) -> StepResult:
        f = g.forest
        if scoring == "children":
            return trie_beam_step_children(features, head.weight, head.bias, scores, nodes, done, f.row_ptr,
                                           f.child_token, f.live, f.num_roots, f.max_children, beams, beams,
                                           backend=kernel_backend)
        return trie_beam_step(own_vocabulary(head.logits(features), g.allowed), scores, nodes, done, f.row_ptr,
                              f.child_token, f.live, f.num_roots, f.max_children, beams, beams,
                              backend=kernel_backend)

    def step(features: torch.Tensor, scores: torch.Tensor, nodes: torch.Tensor, done: torch.Tensor) -> StepResult:
        if len(groups) == 1:
            return one(groups[0], features, scores, nodes, done)
        parts = [(g, one(g, features[g.rows], scores[g.rows], nodes[g.rows], done[g.rows])) for g in groups]
        first = parts[0][1]
        out = [torch.empty((len(tries), beams), dtype=x.dtype, device=x.device) for x in first]
        for g, res in parts:
            for dst, src in zip(out, res, strict=True):
                dst[g.queries] = src
        return StepResult(*out)

    return step


def constrained_beam_search(backend: Seq2SeqBackend, enc: EncodedQueries, tries: Sequence[Trie], beams: int,
                            deadline: float | None = None, kernel_backend: str = "auto", scoring: str = "vocab",
                            checkpoint: Checkpoint | None = None) -> BeamResult:
    """Decode each query (row of ``enc``) from its own trie's root (rows may mix tenants, and so forests).
    ``checkpoint``: called before each step (the scheduler may run other work there)."""
    if len(tries) != enc.hidden.shape[0]:
        raise ValueError(f"{enc.hidden.shape[0]} queries but {len(tries)} tries")
    step = trie_step_fn(backend, tries, beams, kernel_backend, scoring)
    nodes, scores = start_beams([t.roots for t in tries], beams, backend.device)
    return run_beams(backend, enc, nodes, scores, beams, max(t.forest.max_depth for t in tries), step, deadline,
                     checkpoint)


@torch.inference_mode()
def score_docids(backend: Seq2SeqBackend, enc: EncodedQueries, trie: Trie, tokens: torch.Tensor,
                 scoring: str = "vocab", deadline: float | None = None, checkpoint: Checkpoint | None = None,
                 kernel_backend: str = "auto", roots: torch.Tensor | None = None) -> torch.Tensor:
    """Teacher-forced scoring: the score beam search gives each of the given docids (same scoring mode,
    same trie, same kernels), without searching.

    tokens: (batch, C, L) docid rows (tokens, EOS, PAD) to score for each query (row of ``enc``), each
    from ``roots[c]`` (C,) (default: the trie's first root). Returns (batch, C) log-probabilities; -inf
    for a row that is not a live docid there.
    """
    if scoring not in SCORING:
        raise ValueError(f"unknown scoring mode {scoring!r}; valid: {', '.join(SCORING)}")
    batch, cands, width = tokens.shape
    rows = batch * cands
    device = backend.device
    want_all = tokens.to(device).long().reshape(rows, width)
    start = roots if roots is not None else torch.full((cands,), trie.roots[0], dtype=torch.long)
    nodes = start.to(device).long().repeat(batch)
    scores = torch.zeros(rows, device=device)
    done = torch.zeros(rows, dtype=torch.bool, device=device)
    state = backend.start(enc, cands)
    head, f = backend.head, trie.forest
    allowed = allowed_tokens(trie, head.weight.shape[0], device)
    every = max(1, f.max_children)  # all of a row's children, so the wanted one is among them
    prev: torch.Tensor | None = None
    for t in range(width):
        if checkpoint is not None:
            checkpoint()
        if deadline is not None and time.monotonic() > deadline:
            raise DeadlineExceeded("deadline passed during scoring")
        features = backend.step(state, prev)
        if scoring == "children":
            row = row_topk_children(features, head.weight, head.bias, scores, nodes, done, f.row_ptr,
                                    f.child_token, f.live, f.num_roots, every, f.max_children, kernel_backend)
        else:
            row = row_topk(own_vocabulary(head.logits(features), allowed), scores, nodes, done, f.row_ptr,
                           f.child_token, f.live, f.num_roots, every, f.max_children, kernel_backend)
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

    nodes, scores = start_beams([(0,)] * batch, beams, backend.device)
    return run_beams(backend, enc, nodes, scores, beams, max_steps, step)

"""Pure-torch references of the constrained-decoding ops. Each docstring is the op's specification.

A beam step is two ops: ``row_topk`` (per beam row: restrict to the live children of its trie node,
log-softmax, add the beam score, keep the row's best candidates) and ``beam_select`` (per query: the
best candidates across its beams, and which beam each extends). ``row_topk`` has two scoring modes:

* ``vocab``: log_softmax over the whole docid vocabulary, from full logits (what HF ``generate`` with a
  prefix constraint computes);
* ``children``: logits only for the row's live children (hidden state times the output embedding rows
  of those tokens), log_softmax over those children: nothing the trie forbids is computed.

Tries are the CSR arrays of ``genret.decoding.trie``: edge ``e`` has token ``child_token[e]`` and leads to node
``num_roots + e``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

PAD = 0
NEG_INF = float("-inf")


class RowTopK(NamedTuple):
    scores: torch.Tensor  # (rows, K) float32, descending; -inf pads
    tokens: torch.Tensor  # (rows, K) int64; PAD pads
    nodes: torch.Tensor  # (rows, K) int64 node after the token; -1 pads


class StepResult(NamedTuple):
    scores: torch.Tensor  # (batch, k) float32, descending per row
    tokens: torch.Tensor  # (batch, k) int64 docid tokens; PAD for a finished or empty beam
    nodes: torch.Tensor  # (batch, k) int64 trie node after the token; -1 for an empty beam
    parents: torch.Tensor  # (batch, k) int64 beam (0..beams_in-1) each new beam extends


def row_width(k: int, max_children: int) -> int:
    """Candidates kept per row: no row has more than ``max_children`` (a finished row has one)."""
    return max(1, min(k, max_children))


# A row with more children than this scores them from one matrix product with the whole output embedding
# (children mode), not from a gathered copy of their rows: at an atomic index's root every document is a child.
WIDE_CHILDREN = 4096


def _children(beam_scores: torch.Tensor, nodes: torch.Tensor, done: torch.Tensor, row_ptr: torch.Tensor,
              child_token: torch.Tensor, live: torch.Tensor,
              num_roots: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The rows that expand (alive, not done) and their children padded to the widest of them: row
    indices (A,), tokens, nodes (A, C) int64 and live mask. Only those rows are expanded, so a wide node
    costs its width once per expanding beam, not once per row of the batch."""
    act = ((~done) & (beam_scores > NEG_INF) & (nodes >= 0)).nonzero().squeeze(1)
    at = nodes[act].long()
    start = row_ptr[at].long()
    count = row_ptr[at + 1].long() - start  # (A,)
    width = max(1, int(count.max())) if count.numel() else 1
    pos = torch.arange(width, device=nodes.device)
    in_row = pos < count[:, None]  # (A, C)
    edge = torch.where(in_row, start[:, None] + pos, torch.zeros_like(start[:, None]))
    tok = child_token[edge].long() if child_token.numel() else torch.zeros_like(edge)
    child = edge + num_roots
    ok = in_row & (live[child.clamp(max=live.numel() - 1)] > 0)
    return act, tok, child, ok


def _keep_best(act: torch.Tensor, cand: torch.Tensor, tok: torch.Tensor, child: torch.Tensor,
               beam_scores: torch.Tensor, nodes: torch.Tensor, done: torch.Tensor, width: int) -> RowTopK:
    """Rows ``act`` keep their ``width`` best candidates (ties to the smaller token); every other row has
    none, except that a finished row carries itself."""
    rows = beam_scores.shape[0]
    fin = done & (beam_scores > NEG_INF)
    scores = torch.full((rows, width), NEG_INF, dtype=torch.float32, device=beam_scores.device)
    tokens = torch.full((rows, width), PAD, dtype=torch.int64, device=beam_scores.device)
    out_nodes = torch.full((rows, width), -1, dtype=torch.int64, device=beam_scores.device)
    scores[:, 0] = torch.where(fin, beam_scores.float(), NEG_INF)
    out_nodes[:, 0] = torch.where(fin, nodes.long(), -1)
    if cand.shape[1] < width:
        pad = width - cand.shape[1]
        cand = torch.nn.functional.pad(cand, (0, pad), value=NEG_INF)
        tok = torch.nn.functional.pad(tok, (0, pad), value=PAD)
        child = torch.nn.functional.pad(child, (0, pad), value=-1)
    order = _best_positions(cand, width)
    best = cand.gather(1, order)
    empty = best == NEG_INF
    scores[act] = best
    tokens[act] = torch.where(empty, PAD, tok.gather(1, order))
    out_nodes[act] = torch.where(empty, -1, child.gather(1, order))
    return RowTopK(scores, tokens, out_nodes)


def _best_positions(cand: torch.Tensor, width: int) -> torch.Tensor:
    """(A, width) positions of each row's ``width`` best candidates, by score descending, ties to the
    smaller position. A wide row is not sorted whole: the ``width``-th best score is found by top-k, every
    candidate above it is kept and, of those equal to it, the first ones, then only the kept are sorted."""
    if cand.shape[1] <= WIDE_CHILDREN:
        return torch.sort(cand, dim=1, descending=True, stable=True).indices[:, :width]
    kth = torch.topk(cand, width, dim=1).values[:, -1:]  # (A, 1)
    above = cand > kth
    tied = cand == kth
    keep = above | (tied & (tied.cumsum(1) <= width - above.sum(1, keepdim=True)))
    kept = keep.nonzero()[:, 1].view(-1, width)  # exactly ``width`` per row, by position
    return kept.gather(1, torch.sort(cand.gather(1, kept), dim=1, descending=True, stable=True).indices)


def row_topk_torch(logits: torch.Tensor, beam_scores: torch.Tensor, nodes: torch.Tensor, done: torch.Tensor,
                   row_ptr: torch.Tensor, child_token: torch.Tensor, live: torch.Tensor, num_roots: int,
                   width: int) -> RowTopK:
    """Per beam row, its best ``width`` trie-allowed candidates, scoring mode ``vocab``.

    logits: (rows, vocab); beam_scores (float), nodes (int), done (bool): (rows,). For row r:

        if beam_scores[r] == -inf or nodes[r] < 0: cands = []                       # empty beam
        elif done[r]: cands = [(beam_scores[r], PAD, nodes[r])]                     # finished, carried
        else:
            logp = log_softmax(logits[r])                                           # whole docid vocab
            cands = [(beam_scores[r] + logp[child_token[e]], child_token[e], num_roots + e)
                     for e in range(row_ptr[nodes[r]], row_ptr[nodes[r] + 1]) if live[num_roots + e] > 0]
        sort cands by score descending, ties to the smaller token; keep ``width``;
        pad with (-inf, PAD, -1).
    """
    act, tok, child, ok = _children(beam_scores, nodes, done, row_ptr, child_token, live, num_roots)
    rows = logits[act].float()
    logp = rows.gather(1, tok) - torch.logsumexp(rows, dim=1, keepdim=True)
    cand = torch.where(ok, beam_scores[act, None].float() + logp, NEG_INF)
    return _keep_best(act, cand, tok, child, beam_scores, nodes, done, width)


def row_topk_children_torch(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                            beam_scores: torch.Tensor, nodes: torch.Tensor, done: torch.Tensor,
                            row_ptr: torch.Tensor, child_token: torch.Tensor, live: torch.Tensor,
                            num_roots: int, width: int) -> RowTopK:
    """Per beam row, its best ``width`` trie-allowed candidates, scoring mode ``children``.

    hidden: (rows, H) decoder output features; weight: (vocab, H) output embedding of the docid tokens;
    bias: (vocab,) or None. As ``row_topk_torch``, except that for an active row

        logit[e] = hidden[r] . weight[child_token[e]] + bias[child_token[e]]   for its live children e
        logp = log_softmax(logit)                                            over those children only
    """
    act, tok, child, ok = _children(beam_scores, nodes, done, row_ptr, child_token, live, num_roots)
    h = hidden[act].float()
    if tok.shape[1] > WIDE_CHILDREN:  # (A, vocab) from one product, then each row's children
        logit = (h @ weight.float().T).gather(1, tok)
    else:
        logit = torch.einsum("rch,rh->rc", weight[tok].float(), h)  # (A, C)
    if bias is not None:
        logit = logit + bias.float()[tok]
    logit = torch.where(ok, logit, NEG_INF)
    lse = torch.logsumexp(logit, dim=1, keepdim=True)
    cand = torch.where(ok, beam_scores[act, None].float() + (logit - lse), NEG_INF)
    return _keep_best(act, cand, tok, child, beam_scores, nodes, done, width)


def beam_select_torch(row: RowTopK, beams_in: int, k: int) -> StepResult:
    """Per query, the ``k`` best of its beams' row candidates.

    row: (batch*beams_in, W) candidates. For query b, flatten rows b*beams_in .. b*beams_in+beams_in-1 in
    order into beams_in*W candidates; keep the k best by score, ties to the smaller flat position
    (i.e. to the earlier beam, then to the smaller token); the parent of flat position p is p // W.
    Pad with (-inf, PAD, -1, parent 0).
    """
    rows, width = row.scores.shape
    if rows % beams_in:
        raise ValueError(f"expected batch*{beams_in} rows, got {rows}")
    batch = rows // beams_in
    flat = row.scores.reshape(batch, beams_in * width)
    if flat.shape[1] < k:
        flat = torch.nn.functional.pad(flat, (0, k - flat.shape[1]), value=NEG_INF)
    order = torch.sort(flat, dim=1, descending=True, stable=True).indices[:, :k]  # (batch, k)
    scores = flat.gather(1, order)
    empty = scores == NEG_INF
    safe = torch.where(empty, 0, order)
    tokens = row.tokens.reshape(batch, -1).gather(1, safe)
    nodes = row.nodes.reshape(batch, -1).gather(1, safe)
    return StepResult(scores, torch.where(empty, PAD, tokens), torch.where(empty, -1, nodes),
                      torch.where(empty, 0, safe // width))

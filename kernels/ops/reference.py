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


def _children(beam_scores: torch.Tensor, nodes: torch.Tensor, done: torch.Tensor, row_ptr: torch.Tensor,
              child_token: torch.Tensor, live: torch.Tensor,
              num_roots: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each row's children padded to the widest row: tokens, nodes (rows, C) int64 and live mask."""
    active = (~done) & (beam_scores > NEG_INF) & (nodes >= 0)
    safe = nodes.clamp(min=0).long()
    start = row_ptr[safe].long()
    count = torch.where(active, row_ptr[safe + 1].long() - start, torch.zeros_like(start))  # (rows,)
    width = max(1, int(count.max())) if count.numel() else 1
    pos = torch.arange(width, device=nodes.device)
    in_row = pos < count[:, None]  # (rows, C)
    edge = torch.where(in_row, start[:, None] + pos, torch.zeros_like(start[:, None]))
    tok = child_token[edge].long() if child_token.numel() else torch.zeros_like(edge)
    child = edge + num_roots
    ok = in_row & (live[child.clamp(max=live.numel() - 1)] > 0)
    return tok, child, ok


def _keep_best(cand: torch.Tensor, tok: torch.Tensor, child: torch.Tensor, beam_scores: torch.Tensor,
               nodes: torch.Tensor, done: torch.Tensor, width: int) -> RowTopK:
    """Finished rows carry themselves; sort each row (ties to the smaller token) and keep ``width``."""
    fin = done & (beam_scores > NEG_INF)
    first = torch.zeros_like(cand, dtype=torch.bool)
    first[:, 0] = fin
    cand = torch.where(first, beam_scores[:, None].float(), cand)
    tok = torch.where(first, torch.full_like(tok, PAD), tok)
    child = torch.where(first, nodes[:, None].long(), child)
    if cand.shape[1] < width:
        pad = width - cand.shape[1]
        cand = torch.nn.functional.pad(cand, (0, pad), value=NEG_INF)
        tok = torch.nn.functional.pad(tok, (0, pad), value=PAD)
        child = torch.nn.functional.pad(child, (0, pad), value=-1)
    order = torch.sort(cand, dim=1, descending=True, stable=True).indices[:, :width]
    scores = cand.gather(1, order)
    empty = scores == NEG_INF
    return RowTopK(scores, torch.where(empty, PAD, tok.gather(1, order)),
                   torch.where(empty, -1, child.gather(1, order)))


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
    tok, child, ok = _children(beam_scores, nodes, done, row_ptr, child_token, live, num_roots)
    logp = logits.float().gather(1, tok) - torch.logsumexp(logits.float(), dim=1, keepdim=True)
    cand = torch.where(ok, beam_scores[:, None].float() + logp, NEG_INF)
    return _keep_best(cand, tok, child, beam_scores, nodes, done, width)


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
    tok, child, ok = _children(beam_scores, nodes, done, row_ptr, child_token, live, num_roots)
    logit = torch.einsum("rch,rh->rc", weight[tok].float(), hidden.float())  # (rows, C)
    if bias is not None:
        logit = logit + bias.float()[tok]
    logit = torch.where(ok, logit, NEG_INF)
    lse = torch.logsumexp(logit, dim=1, keepdim=True)
    cand = torch.where(ok, beam_scores[:, None].float() + (logit - lse), NEG_INF)
    return _keep_best(cand, tok, child, beam_scores, nodes, done, width)


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

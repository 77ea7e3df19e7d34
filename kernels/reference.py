"""Pure-torch reference of the fused constrained beam step. Its docstring is the op's specification."""

from __future__ import annotations

from typing import NamedTuple

import torch

PAD = 0
NEG_INF = float("-inf")


class StepResult(NamedTuple):
    scores: torch.Tensor  # (batch, k) float32, descending per row
    tokens: torch.Tensor  # (batch, k) int64 docid tokens; PAD for a finished or empty beam
    nodes: torch.Tensor  # (batch, k) int64 trie node after the token; -1 for an empty beam
    parents: torch.Tensor  # (batch, k) int64 beam (0..beams_in-1) each new beam extends


def trie_beam_step_torch(logits: torch.Tensor, beam_scores: torch.Tensor, nodes: torch.Tensor,
                         done: torch.Tensor, row_ptr: torch.Tensor, child_token: torch.Tensor,
                         child_node: torch.Tensor, live: torch.Tensor, beams_in: int, k: int) -> StepResult:
    """One step of beam search restricted to a trie forest.

    logits: (batch*beams_in, vocab); beam_scores, nodes, done: (batch*beams_in,). For query b:

        candidates = []
        for i in range(beams_in):
            r = b * beams_in + i
            if beam_scores[r] == -inf: continue                         # empty beam
            if done[r]: candidates.append((beam_scores[r], PAD, nodes[r], i, r*vocab + PAD)); continue
            logp = log_softmax(logits[r])                               # over the whole docid vocab
            for e in range(row_ptr[nodes[r]], row_ptr[nodes[r] + 1]):
                c = child_node[e]
                if live[c] > 0:
                    candidates.append((beam_scores[r] + logp[child_token[e]], child_token[e], c, i,
                                       r*vocab + child_token[e]))
        keep the k best by score, ties to the smaller flat index; pad with (-inf, PAD, -1, 0).
    """
    rows, vocab = logits.shape
    if rows % beams_in or not (beam_scores.shape == nodes.shape == done.shape == (rows,)):
        raise ValueError(f"expected (batch*{beams_in},) beam tensors for {rows} logit rows")
    if k > beams_in * vocab:
        raise ValueError(f"k={k} exceeds the candidates per query ({beams_in * vocab})")
    batch = rows // beams_in
    device = logits.device
    logp = torch.log_softmax(logits.float(), dim=-1)  # (rows, vocab)
    active = (~done) & (beam_scores > NEG_INF) & (nodes >= 0)
    safe_nodes = nodes.clamp(min=0)
    start = row_ptr[safe_nodes]
    counts = torch.where(active, row_ptr[safe_nodes + 1] - start, torch.zeros_like(start))  # (rows,)
    row_of_edge = torch.repeat_interleave(torch.arange(rows, device=device), counts)
    offsets = torch.cumsum(counts, 0) - counts
    edge = start[row_of_edge] + torch.arange(row_of_edge.numel(), device=device) - offsets[row_of_edge]
    child = child_node[edge]
    tok = child_token[edge]
    ok = live[child] > 0
    row_of_edge, tok, child = row_of_edge[ok], tok[ok], child[ok]

    cand = torch.full((rows, vocab), NEG_INF, device=device)
    nxt = torch.full((rows, vocab), -1, dtype=torch.int64, device=device)
    cand[row_of_edge, tok] = beam_scores[row_of_edge].float() + logp[row_of_edge, tok]
    nxt[row_of_edge, tok] = child
    fin = done & (beam_scores > NEG_INF)
    cand[fin, PAD] = beam_scores[fin].float()
    nxt[fin, PAD] = nodes[fin]

    flat = cand.view(batch, beams_in * vocab)
    order = torch.sort(flat, dim=1, descending=True, stable=True).indices[:, :k]  # (batch, k)
    scores = flat.gather(1, order)
    empty = scores == NEG_INF
    tokens = torch.where(empty, torch.full_like(order, PAD), order % vocab)
    nodes_out = torch.where(empty, torch.full_like(order, -1), nxt.view(batch, -1).gather(1, order))
    parents = torch.where(empty, torch.zeros_like(order), order // vocab)
    return StepResult(scores, tokens, nodes_out, parents)

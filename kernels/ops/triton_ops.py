"""Triton kernels of the constrained-decoding ops (semantics: ``genret.kernels.reference``).

``_row_topk_kernel``: one program per beam row. It loads the row's children from the CSR (one
contiguous run of edges), scores them (a gather from full logits with an online log-sum-exp over the
vocabulary, or, in ``children`` mode, dot products of the row's hidden state with only those tokens'
output embeddings), adds the beam score, and emits the row's best candidates by repeated arg-max
(ties to the lower index, i.e. the smaller token: edges are sorted by token).

``_beam_select_kernel``: one program per query, arg-max over its beams' row candidates.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from genret.kernels.reference import PAD, RowTopK, StepResult

# A kernel reads module globals only as compile-time constants (Triton's interpreter reads any global).
_PAD = tl.constexpr(PAD)


@triton.jit
def _row_topk_kernel(src_ptr, src_stride, weight_ptr, weight_stride, bias_ptr,
                     beam_ptr, node_ptr, done_ptr, row_ptr_ptr, token_ptr, live_ptr,
                     out_score_ptr, out_token_ptr, out_node_ptr,
                     num_roots, vocab, hidden,
                     WIDTH: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_H: tl.constexpr,
                     CHILD_LOGITS: tl.constexpr, HAS_BIAS: tl.constexpr):
    r = tl.program_id(0).to(tl.int64)
    score = tl.load(beam_ptr + r).to(tl.float32)
    node = tl.load(node_ptr + r).to(tl.int64)
    done = tl.load(done_ptr + r).to(tl.int32)
    alive_beam = (score > float("-inf")) & (node >= 0)
    active = alive_beam & (done == 0)
    safe = tl.where(node >= 0, node, 0)
    start = tl.load(row_ptr_ptr + safe).to(tl.int64)
    count = tl.where(active, tl.load(row_ptr_ptr + safe + 1).to(tl.int64) - start, 0)

    offs = tl.arange(0, BLOCK_C)
    in_row = offs < count
    tok = tl.load(token_ptr + start + offs, mask=in_row, other=0).to(tl.int64)
    child = start + offs + num_roots
    ok = in_row & (tl.load(live_ptr + child, mask=in_row, other=0) > 0)

    if CHILD_LOGITS:
        acc = tl.zeros([BLOCK_C], dtype=tl.float32)
        for h0 in range(0, hidden, BLOCK_H):
            h = h0 + tl.arange(0, BLOCK_H)
            hm = h < hidden
            x = tl.load(src_ptr + r * src_stride + h, mask=hm, other=0.0).to(tl.float32)
            w = tl.load(weight_ptr + tok[:, None] * weight_stride + h[None, :], mask=ok[:, None] & hm[None, :],
                        other=0.0).to(tl.float32)
            acc += tl.sum(w * x[None, :], axis=1)
        if HAS_BIAS:
            acc += tl.load(bias_ptr + tok, mask=ok, other=0.0).to(tl.float32)
        logit = tl.where(ok, acc, float("-inf"))
        peak = tl.max(logit, axis=0)
        peak = tl.where(peak > float("-inf"), peak, 0.0)
        total = tl.sum(tl.where(ok, tl.exp(logit - peak), 0.0), axis=0)
        lse = peak + tl.log(tl.where(total > 0, total, 1.0))
    else:
        run_max = float("-inf")
        run_sum = 0.0
        span = tl.where(active, vocab, 0)
        for v0 in range(0, span, BLOCK_V):
            v = v0 + tl.arange(0, BLOCK_V)
            x = tl.load(src_ptr + r * src_stride + v, mask=v < vocab, other=float("-inf")).to(tl.float32)
            new_max = tl.maximum(run_max, tl.max(x, axis=0))
            run_sum = run_sum * tl.exp(run_max - new_max) + tl.sum(tl.exp(x - new_max), axis=0)
            run_max = new_max
        lse = tl.where(run_sum > 0, run_max + tl.log(tl.where(run_sum > 0, run_sum, 1.0)), 0.0)
        logit = tl.load(src_ptr + r * src_stride + tok, mask=ok, other=float("-inf")).to(tl.float32)
    cand = tl.where(ok, score + (logit - lse), float("-inf"))

    carried = (offs == 0) & ((done != 0) & alive_beam)  # a finished beam competes as itself
    cand = tl.where(carried, score, cand)
    tok = tl.where(carried, _PAD, tok)
    child = tl.where(carried, node, child)

    out = r * WIDTH
    for j in range(WIDTH):
        best = tl.max(cand, axis=0)
        at = tl.argmax(cand, axis=0)
        pick = offs == at
        has = best > float("-inf")
        tl.store(out_score_ptr + out + j, best)
        tl.store(out_token_ptr + out + j, tl.where(has, tl.sum(tl.where(pick, tok, 0), axis=0), _PAD))
        tl.store(out_node_ptr + out + j, tl.where(has, tl.sum(tl.where(pick, child, 0), axis=0), -1))
        cand = tl.where(pick, float("-inf"), cand)


@triton.jit
def _beam_select_kernel(score_ptr, token_ptr, node_ptr, out_score_ptr, out_token_ptr, out_node_ptr,
                        out_parent_ptr, per_query, row_width, K: tl.constexpr, BLOCK: tl.constexpr):
    b = tl.program_id(0).to(tl.int64)
    offs = tl.arange(0, BLOCK)
    base = b * per_query
    cand = tl.load(score_ptr + base + offs, mask=offs < per_query, other=float("-inf"))
    for j in range(K):
        best = tl.max(cand, axis=0)
        at = tl.argmax(cand, axis=0).to(tl.int64)
        has = best > float("-inf")
        tok = tl.load(token_ptr + base + at, mask=has, other=_PAD)
        nxt = tl.load(node_ptr + base + at, mask=has, other=-1)
        tl.store(out_score_ptr + b * K + j, best)
        tl.store(out_token_ptr + b * K + j, tl.where(has, tok, _PAD))
        tl.store(out_node_ptr + b * K + j, tl.where(has, nxt, -1))
        tl.store(out_parent_ptr + b * K + j, tl.where(has, at // row_width, 0))
        cand = tl.where(offs == at, float("-inf"), cand)


def _check_rows(beam_scores: torch.Tensor, nodes: torch.Tensor, done: torch.Tensor, rows: int) -> None:
    if not (beam_scores.shape == nodes.shape == done.shape == (rows,)):
        raise ValueError(f"expected ({rows},) beam scores, nodes and done")


def _row_launch(src: torch.Tensor, weight: torch.Tensor | None, bias: torch.Tensor | None,
                beam_scores: torch.Tensor, nodes: torch.Tensor, done: torch.Tensor, row_ptr: torch.Tensor,
                child_token: torch.Tensor, live: torch.Tensor, num_roots: int, width: int,
                max_children: int) -> RowTopK:
    rows = src.shape[0]
    _check_rows(beam_scores, nodes, done, rows)
    src = src.contiguous()
    device = src.device
    out = RowTopK(torch.empty(rows, width, dtype=torch.float32, device=device),
                  torch.empty(rows, width, dtype=torch.int64, device=device),
                  torch.empty(rows, width, dtype=torch.int64, device=device))
    if rows == 0:
        return out
    child_logits = weight is not None
    vocab = weight.shape[0] if weight is not None else src.shape[1]
    hidden = src.shape[1] if child_logits else 1
    weight_t = weight.contiguous() if weight is not None else src
    block_c = triton.next_power_of_2(max(1, max_children))
    block_h = min(triton.next_power_of_2(hidden), max(16, 4096 // block_c))
    tokens = child_token if child_token.numel() else torch.zeros(1, dtype=torch.int32, device=device)
    _row_topk_kernel[(rows,)](
        src, src.stride(0), weight_t, weight_t.stride(0), bias if bias is not None else src,
        beam_scores.contiguous(), nodes.contiguous(), done.contiguous(), row_ptr, tokens, live,
        out.scores, out.tokens, out.nodes, num_roots, vocab, hidden,
        WIDTH=width, BLOCK_C=block_c, BLOCK_V=min(1024, triton.next_power_of_2(vocab)), BLOCK_H=block_h,
        CHILD_LOGITS=child_logits, HAS_BIAS=bias is not None)
    return out


def row_topk_triton(logits: torch.Tensor, beam_scores: torch.Tensor, nodes: torch.Tensor, done: torch.Tensor,
                    row_ptr: torch.Tensor, child_token: torch.Tensor, live: torch.Tensor, num_roots: int,
                    width: int, max_children: int) -> RowTopK:
    return _row_launch(logits, None, None, beam_scores, nodes, done, row_ptr, child_token, live, num_roots,
                       width, max_children)


def row_topk_children_triton(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                             beam_scores: torch.Tensor, nodes: torch.Tensor, done: torch.Tensor,
                             row_ptr: torch.Tensor, child_token: torch.Tensor, live: torch.Tensor,
                             num_roots: int, width: int, max_children: int) -> RowTopK:
    if weight.shape[1] != hidden.shape[1]:
        raise ValueError(f"hidden size {hidden.shape[1]} does not match the output embedding {weight.shape[1]}")
    return _row_launch(hidden, weight, bias, beam_scores, nodes, done, row_ptr, child_token, live, num_roots,
                       width, max_children)


def beam_select_triton(row: RowTopK, beams_in: int, k: int) -> StepResult:
    rows, width = row.scores.shape
    if rows % beams_in:
        raise ValueError(f"expected batch*{beams_in} rows, got {rows}")
    batch = rows // beams_in
    device = row.scores.device
    out = StepResult(torch.empty(batch, k, dtype=torch.float32, device=device),
                     torch.empty(batch, k, dtype=torch.int64, device=device),
                     torch.empty(batch, k, dtype=torch.int64, device=device),
                     torch.empty(batch, k, dtype=torch.int64, device=device))
    if batch == 0:
        return out
    per_query = beams_in * width
    _beam_select_kernel[(batch,)](row.scores.contiguous(), row.tokens.contiguous(), row.nodes.contiguous(),
                                  out.scores, out.tokens, out.nodes, out.parents, per_query, width,
                                  K=k, BLOCK=triton.next_power_of_2(per_query))
    return out

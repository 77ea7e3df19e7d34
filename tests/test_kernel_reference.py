"""The torch reference of the fused constrained step against its plain-loop specification."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genret.docids import EOS, PAD
from genret.kernels import BACKENDS, trie_beam_step
from genret.trie import build_forest

NEG = float("-inf")


def loop_spec(logits, scores, nodes, done, f, beams_in, k):  # type: ignore[no-untyped-def]
    """The docstring's loop, literally."""
    rows, vocab = logits.shape
    out = []
    for b in range(rows // beams_in):
        cands = []
        for i in range(beams_in):
            r = b * beams_in + i
            if scores[r] == NEG:
                continue
            if done[r]:
                cands.append((float(scores[r]), PAD, int(nodes[r]), i, r * vocab + PAD))
                continue
            logp = torch.log_softmax(logits[r].float(), -1)
            for e in range(int(f.row_ptr[nodes[r]]), int(f.row_ptr[nodes[r] + 1])):
                c = int(f.child_node[e])
                if f.live[c] > 0:
                    t = int(f.child_token[e])
                    cands.append((float(scores[r] + logp[t]), t, c, i, r * vocab + t))
        cands.sort(key=lambda x: (-x[0], x[4]))
        cands = cands[:k] + [(NEG, PAD, -1, 0, 0)] * max(0, k - len(cands))
        out.append(cands)
    return out


def random_forest(rng: np.random.Generator, tenants: int, n: int, vocab: int, depth: int):  # type: ignore[no-untyped-def]
    seqs: set[tuple[int, tuple[int, ...]]] = set()
    while len(seqs) < n:
        length = int(rng.integers(1, depth + 1))
        seqs.add((int(rng.integers(0, tenants)), tuple(int(x) for x in rng.integers(2, vocab, length))))
    items = sorted(seqs)
    toks = np.zeros((n, depth + 1), dtype=np.int64)
    for i, (_, s) in enumerate(items):
        toks[i, : len(s)] = s
        toks[i, len(s)] = EOS
    alive = rng.random(n) > 0.2
    return build_forest([f"t{i}" for i in range(tenants)], np.array([t for t, _ in items]), toks, alive=alive)


@pytest.mark.parametrize("seed, batch, beams_in, k, vocab", [
    (0, 1, 1, 1, 7), (1, 3, 4, 4, 13), (2, 2, 5, 3, 37), (3, 4, 2, 6, 130)])
def test_reference_matches_loop_spec(seed: int, batch: int, beams_in: int, k: int, vocab: int) -> None:
    rng = np.random.default_rng(seed)
    f = random_forest(rng, 3, 60, vocab, 4)
    rows = batch * beams_in
    # Beams sit at random nodes (inner nodes, leaves, roots of mixed tenants), some done, some empty.
    nodes = torch.as_tensor(rng.integers(0, f.num_nodes, rows))
    scores = torch.as_tensor(-rng.random(rows) * 3, dtype=torch.float32)
    scores[torch.as_tensor(rng.random(rows) < 0.15)] = NEG
    done = torch.as_tensor(rng.random(rows) < 0.25)
    logits = torch.as_tensor(rng.normal(size=(rows, vocab)), dtype=torch.float32)
    d = f.to_device(torch.device("cpu"))
    res = trie_beam_step(logits, scores, nodes, done, d.row_ptr, d.child_token, d.child_node, d.live,
                         beams_in, k, backend="torch")
    spec = loop_spec(logits, scores, nodes, done, f, beams_in, k)
    for b in range(batch):
        want = spec[b]
        assert res.tokens[b].tolist() == [c[1] for c in want]
        assert res.nodes[b].tolist() == [c[2] for c in want]
        assert res.parents[b].tolist() == [c[3] for c in want]
        np.testing.assert_allclose(res.scores[b].numpy(), [c[0] for c in want], rtol=1e-6, atol=1e-6)


def test_unknown_backend_lists_valid_ones() -> None:
    t = torch.zeros(1)
    with pytest.raises(ValueError, match=", ".join(BACKENDS)):
        trie_beam_step(torch.zeros(1, 3), t, t.long(), t.bool(), t.long(), t.long(), t.long(), t.long(), 1, 1,
                       backend="cuda-magic")

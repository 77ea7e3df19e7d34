"""Constrained-decoding ops: torch references against their plain-loop specs, Triton kernels against the
references (exact tokens, nodes and parents; scores within float tolerance). Without a GPU the kernels run
under TRITON_INTERPRET=1 (set in conftest)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genret.decoding.trie import TrieForest, build_forest
from genret.docids import EOS, PAD
from genret.kernels import BACKENDS, trie_beam_step, trie_beam_step_children

NEG = float("-inf")
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def random_forest(rng: np.random.Generator, tenants: int, n: int, vocab: int, depth: int,
                  dead: float = 0.2) -> TrieForest:
    seqs: set[tuple[int, tuple[int, ...]]] = set()
    while len(seqs) < n:
        length = int(rng.integers(1, depth + 1))
        seqs.add((int(rng.integers(0, tenants)), tuple(int(x) for x in rng.integers(2, vocab, length))))
    items = sorted(seqs)
    toks = np.zeros((n, depth + 1), dtype=np.int64)
    for i, (_, s) in enumerate(items):
        toks[i, : len(s)] = s
        toks[i, len(s)] = EOS
    alive = rng.random(n) > dead
    forest, _ = build_forest([f"t{i}" for i in range(tenants)], np.array([t for t, _ in items]), toks, alive=alive)
    return forest


def loop_spec(logp_of, scores, nodes, done, f: TrieForest, beams_in: int, k: int, vocab: int):  # type: ignore[no-untyped-def]
    """The references' docstrings, literally: per query, (score, token, node, parent) sorted by score then
    flat index r*vocab + token. ``logp_of(r, tokens)`` scores a row's live children."""
    out = []
    for b in range(len(scores) // beams_in):
        cands = []
        for i in range(beams_in):
            r = b * beams_in + i
            if scores[r] == NEG or nodes[r] < 0:
                continue
            if done[r]:
                cands.append((float(scores[r]), PAD, int(nodes[r]), i, r * vocab + PAD))
                continue
            lo, hi = int(f.row_ptr[nodes[r]]), int(f.row_ptr[nodes[r] + 1])
            kids = [(int(f.child_token[e]), f.num_roots + e) for e in range(lo, hi) if f.live[f.num_roots + e] > 0]
            if not kids:
                continue
            logp = logp_of(r, [t for t, _ in kids])
            for (t, c), lp in zip(kids, logp, strict=True):
                cands.append((float(scores[r]) + float(lp), t, c, i, r * vocab + t))
        cands.sort(key=lambda x: (-x[0], x[4]))
        out.append(cands[:k] + [(NEG, PAD, -1, 0, 0)] * max(0, k - len(cands)))
    return out


def random_beams(rng: np.random.Generator, f: TrieForest, rows: int):  # type: ignore[no-untyped-def]
    """Beams at random nodes: roots of mixed tenants, inner nodes, leaves; some done, some empty."""
    nodes = torch.as_tensor(rng.integers(0, f.num_nodes, rows))
    nodes[: min(rows, f.num_roots)] = torch.arange(min(rows, f.num_roots))
    scores = torch.as_tensor(-rng.random(rows) * 3, dtype=torch.float32)
    scores[torch.as_tensor(rng.random(rows) < 0.15)] = NEG
    done = torch.as_tensor(rng.random(rows) < 0.25)
    return scores, nodes, done


def assert_same(res, want, batch: int) -> None:  # type: ignore[no-untyped-def]
    for b in range(batch):
        assert res.tokens[b].tolist() == [c[1] for c in want[b]]
        assert res.nodes[b].tolist() == [c[2] for c in want[b]]
        assert res.parents[b].tolist() == [c[3] for c in want[b]]
        np.testing.assert_allclose(res.scores[b].cpu().numpy(), [c[0] for c in want[b]], rtol=1e-5, atol=1e-5)


def step(f: TrieForest, backend: str, logits, scores, nodes, done, beams_in: int, k: int):  # type: ignore[no-untyped-def]
    d = f.to_device(DEVICE)
    return trie_beam_step(logits.to(DEVICE), scores.to(DEVICE), nodes.to(DEVICE), done.to(DEVICE), d.row_ptr,
                          d.child_token, d.live, d.num_roots, d.max_children, beams_in, k, backend=backend)


def step_children(f: TrieForest, backend: str, hidden, weight, bias, scores, nodes, done, beams_in: int,  # type: ignore[no-untyped-def]
                  k: int):
    d = f.to_device(DEVICE)
    return trie_beam_step_children(hidden.to(DEVICE), weight.to(DEVICE), None if bias is None else bias.to(DEVICE),
                                   scores.to(DEVICE), nodes.to(DEVICE), done.to(DEVICE), d.row_ptr, d.child_token,
                                   d.live, d.num_roots, d.max_children, beams_in, k, backend=backend)


# seed, tenants, docids, batch, beams_in, k, vocab, depth
CASES = [
    (0, 1, 1, 1, 1, 1, 7, 1),  # batch 1, one docid, one beam
    (1, 3, 60, 3, 4, 4, 13, 4),  # mixed tenants
    (2, 2, 40, 2, 5, 3, 37, 3),
    (3, 3, 80, 4, 2, 6, 130, 4),
    (4, 2, 300, 2, 3, 5, 1030, 2),  # vocab not a multiple of the 1024 block; wide nodes
    (5, 1, 5, 2, 3, 3, 9, 6),  # long single-child chains
    (6, 2, 200, 2, 3, 4, 33000, 2),  # a vocabulary past int16 tokens
]


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("seed, tenants, n, batch, beams_in, k, vocab, depth", CASES)
def test_vocab_step_matches_loop_spec(backend: str, seed: int, tenants: int, n: int, batch: int, beams_in: int,
                                      k: int, vocab: int, depth: int) -> None:
    rng = np.random.default_rng(seed)
    f = random_forest(rng, tenants, n, vocab, depth)
    scores, nodes, done = random_beams(rng, f, batch * beams_in)
    logits = torch.as_tensor(rng.normal(size=(batch * beams_in, vocab)), dtype=torch.float32)
    logp = torch.log_softmax(logits, -1)
    want = loop_spec(lambda r, toks: logp[r, toks].tolist(), scores, nodes, done, f, beams_in, k, vocab)
    assert_same(step(f, backend, logits, scores, nodes, done, beams_in, k), want, batch)


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("seed, tenants, n, batch, beams_in, k, vocab, depth", CASES)
def test_children_step_matches_loop_spec(backend: str, bias: bool, seed: int, tenants: int, n: int, batch: int,
                                         beams_in: int, k: int, vocab: int, depth: int) -> None:
    rng = np.random.default_rng(seed)
    f = random_forest(rng, tenants, n, vocab, depth)
    scores, nodes, done = random_beams(rng, f, batch * beams_in)
    hidden = torch.as_tensor(rng.normal(size=(batch * beams_in, 24)), dtype=torch.float32)
    weight = torch.as_tensor(rng.normal(size=(vocab, 24)), dtype=torch.float32)
    b = torch.as_tensor(rng.normal(size=vocab), dtype=torch.float32) if bias else None

    def logp_of(r: int, toks: list[int]) -> list[float]:
        logit = weight[toks] @ hidden[r] + (b[toks] if b is not None else 0)
        return torch.log_softmax(logit, -1).tolist()

    want = loop_spec(logp_of, scores, nodes, done, f, beams_in, k, vocab)
    assert_same(step_children(f, backend, hidden, weight, b, scores, nodes, done, beams_in, k), want, batch)


def atomic_forest(rng: np.random.Generator, tenants: int, n: int, vocab: int) -> TrieForest:
    """One token per docid (an atomic index): each tenant's root has about n / tenants children."""
    toks = np.zeros((n, 2), dtype=np.int64)
    toks[:, 0] = 2 + rng.choice(vocab - 2, n, replace=False)
    toks[:, 1] = EOS
    forest, _ = build_forest([f"t{i}" for i in range(tenants)], rng.integers(0, tenants, n), toks,
                             alive=rng.random(n) > 0.1)
    return forest


# Nodes past the matrix-product threshold of the children reference (4,096) and past the widest node the
# Triton kernel takes (16,384: wider runs the torch op whatever the backend).
@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("n, vocab", [(9000, 9500), (34000, 34500)])
def test_wide_nodes_match_loop_spec(backend: str, n: int, vocab: int) -> None:
    rng = np.random.default_rng(n)
    f = atomic_forest(rng, 2, n, vocab)
    assert f.max_children > 4096
    batch, beams_in, k = 3, 4, 5
    scores, nodes, done = random_beams(rng, f, batch * beams_in)
    nodes[::beams_in] = torch.as_tensor(rng.integers(0, 2, batch))  # each query has a beam at a root
    done[::beams_in] = False
    scores[::beams_in] = -0.5
    logits = torch.as_tensor(rng.normal(size=(batch * beams_in, vocab)), dtype=torch.float32)
    logits[0] = 0.0  # every child of the first row ties: the smallest tokens win
    logits[beams_in, ::2] = 5.0  # half tie at the top
    logp = torch.log_softmax(logits, -1)
    want = loop_spec(lambda r, toks: logp[r, toks].tolist(), scores, nodes, done, f, beams_in, k, vocab)
    assert_same(step(f, backend, logits, scores, nodes, done, beams_in, k), want, batch)
    hidden = torch.as_tensor(rng.normal(size=(batch * beams_in, 16)), dtype=torch.float32)
    weight = torch.as_tensor(rng.normal(size=(vocab, 16)), dtype=torch.float32)
    want = loop_spec(lambda r, toks: torch.log_softmax(weight[toks] @ hidden[r], -1).tolist(), scores, nodes, done,
                     f, beams_in, k, vocab)
    assert_same(step_children(f, backend, hidden, weight, None, scores, nodes, done, beams_in, k), want, batch)


def test_triton_equals_torch_on_ties_and_deleted_docids() -> None:
    """Equal logits make every child tie: both backends break ties to the earlier beam, then smaller token."""
    rng = np.random.default_rng(7)
    f = random_forest(rng, 2, 50, 11, 3, dead=0.5)
    rows, beams_in = 8, 4
    scores = torch.zeros(rows)
    nodes = torch.tensor([0, 1, 0, 1, 0, 0, 1, 1])
    done = torch.zeros(rows, dtype=torch.bool)
    logits = torch.zeros(rows, 11)
    a = step(f, "torch", logits, scores, nodes, done, beams_in, 6)
    t = step(f, "triton", logits, scores, nodes, done, beams_in, 6)
    for x, y in zip(a, t, strict=True):
        assert torch.equal(x.cpu(), y.cpu())
    # A deleted docid is never a candidate: every node picked has live descendants.
    assert all(f.live[n] > 0 for n in a.nodes.flatten().tolist() if n >= 0)


def test_fully_deleted_tenant_yields_empty_beams() -> None:
    rng = np.random.default_rng(8)
    f = random_forest(rng, 1, 10, 9, 2, dead=1.0)
    for backend in ("torch", "triton"):
        res = step(f, backend, torch.randn(2, 9), torch.zeros(2), torch.zeros(2, dtype=torch.long),
                   torch.zeros(2, dtype=torch.bool), 2, 2)
        assert (res.nodes == -1).all() and torch.isinf(res.scores).all()


def test_unknown_backend_lists_valid_ones() -> None:
    rng = np.random.default_rng(0)
    f = random_forest(rng, 1, 3, 5, 2)
    with pytest.raises(ValueError, match=", ".join(BACKENDS)):
        step(f, "cuda-magic", torch.zeros(1, 5), torch.zeros(1), torch.zeros(1, dtype=torch.long),
             torch.zeros(1, dtype=torch.bool), 1, 1)


@pytest.mark.gpu
@pytest.mark.parametrize("seed", range(3))
def test_auto_backend_runs_triton_on_cuda_exactly_as_the_reference(seed: int) -> None:
    """On a CUDA device the default backend picks the Triton kernels; they agree with the torch reference."""
    rng = np.random.default_rng(seed)
    f = random_forest(rng, tenants=3, n=200, vocab=40, depth=4)
    beams_in, k, batch = 4, 4, 5
    scores, nodes, done = random_beams(rng, f, batch * beams_in)
    logits = torch.as_tensor(rng.normal(size=(batch * beams_in, 40)), dtype=torch.float32)
    auto = step(f, "auto", logits, scores, nodes, done, beams_in, k)
    ref = step(f, "torch", logits, scores, nodes, done, beams_in, k)
    assert auto.scores.is_cuda
    assert torch.equal(auto.tokens, ref.tokens) and torch.equal(auto.nodes, ref.nodes)
    assert torch.equal(auto.parents, ref.parents)
    torch.testing.assert_close(auto.scores, ref.scores, rtol=1e-5, atol=1e-5)

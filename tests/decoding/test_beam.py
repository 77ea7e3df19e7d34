from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from genret.decoding.beam import (
    Trie,
    constrained_beam_search,
    run_beams,
    score_docids,
    start_beams,
    trie_step_fn,
    unconstrained_beam_search,
)
from genret.decoding.graphs import GraphedDecode
from genret.decoding.model import EncodedQueries, HFSeq2SeqBackend
from genret.decoding.trie import DeviceForest, build_forest
from genret.docids import AtomicCodec, SemanticCodec, assign_docids
from genret.indexing.models import build_tiny_model
from genret.indexing.training import sequence_loss
from genret.serving.namespaces import build_namespaces

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
QUERIES = ["wing flutter at supersonic speed", "heat transfer in boundary layers", "x"]


def make_case(n_docs: int, branching: int, seed: int, query_skip: float = 0.0):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    docids = assign_docids("semantic", [str(i) for i in range(n_docs)], rng.normal(size=(n_docs, 8)).astype(np.float32),
                           branching, seed)
    depth = max(len(d.split("-")) for d in docids)
    codec = SemanticCodec(branching, depth)
    model, tok, spec = build_tiny_model(codec.vocab_size, seed=seed)
    spec = replace(spec, query_skip=query_skip)
    return docids, codec, HFSeq2SeqBackend(model, tok, spec, DEVICE), model, tok, spec


def brute_force(model, tok, spec, codec, docids, query):  # type: ignore[no-untyped-def]
    """Sequence log-probability of every docid by teacher forcing."""
    labels = torch.as_tensor(codec.encode_many(docids), device=DEVICE)
    labels = torch.where(labels == 0, torch.full_like(labels, -100), labels)
    batch = tok([query] * len(docids), return_tensors="pt", truncation=True, max_length=64).to(DEVICE)
    with torch.no_grad():
        nll = sequence_loss(model, spec, labels, input_ids=batch["input_ids"],
                            attention_mask=batch["attention_mask"], reduction="none")
    return (-nll).cpu().numpy()


@pytest.mark.parametrize("query_skip", [0.0, 3.0])
def test_exhaustive_beam_equals_brute_force(query_skip: float) -> None:
    """Decoding scores every docid as training's teacher forcing does, with the query skip on or off."""
    docids, codec, backend, model, tok, spec = make_case(40, 4, seed=1, query_skip=query_skip)
    forest, order = build_forest(["t"], np.zeros(len(docids), dtype=np.int64), codec.encode_many(docids))
    enc = backend.encode(QUERIES)
    res = constrained_beam_search(backend, enc, tries(forest.to_device(DEVICE), [0] * len(QUERIES)),
                                  beams=len(docids))
    for q, query in enumerate(QUERIES):
        ref = brute_force(model, tok, spec, codec, docids, query)
        got_docs = order[forest.leaf_rank(res.leaves[q].cpu().numpy())].tolist()
        assert sorted(got_docs) == list(range(len(docids)))  # every docid, each once
        np.testing.assert_allclose(res.scores[q].cpu().numpy(), np.sort(ref)[::-1], rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(res.scores[q].cpu().numpy(), ref[got_docs], rtol=1e-4, atol=1e-4)


def test_narrow_beam_returns_only_existing_docids_of_the_right_tenant() -> None:
    docids, codec, backend, *_ = make_case(30, 3, seed=2)
    tenant_of = np.array([i % 2 for i in range(len(docids))])
    forest, order = build_forest(["a", "b"], tenant_of, codec.encode_many(docids))
    enc = backend.encode(QUERIES[:2])
    res = constrained_beam_search(backend, enc, tries(forest.to_device(DEVICE), [0, 1]), beams=5)
    for q, tenant in enumerate([0, 1]):
        scores = res.scores[q].tolist()
        assert scores == sorted(scores, reverse=True)
        for leaf in res.leaves[q].tolist():
            assert leaf >= 0
            assert tenant_of[order[forest.leaf_rank(np.array([leaf]))[0]]] == tenant


def test_tenant_with_fewer_docids_than_beams_pads_with_empty() -> None:
    docids, codec, backend, *_ = make_case(6, 3, seed=3)
    tenant_of = np.array([0] * 5 + [1])
    forest, order = build_forest(["a", "b"], tenant_of, codec.encode_many(docids))
    enc = backend.encode(QUERIES[:1])
    res = constrained_beam_search(backend, enc, tries(forest.to_device(DEVICE), [1]), beams=4)
    assert res.leaves[0, 0] >= 0 and order[forest.leaf_rank(res.leaves[0, :1].cpu().numpy())[0]] == 5
    assert (res.leaves[0, 1:] == -1).all() and torch.isinf(res.scores[0, 1:]).all()


def test_children_scoring_is_a_distribution_over_the_namespace() -> None:
    """Renormalised over the allowed children at every step, exhaustive scores sum to probability 1."""
    docids, codec, backend, *_ = make_case(30, 3, seed=4)
    forest, _ = build_forest(["t"], np.zeros(len(docids), dtype=np.int64), codec.encode_many(docids))
    res = constrained_beam_search(backend, backend.encode(QUERIES), tries(forest.to_device(DEVICE), [0] * len(QUERIES)),
                                  beams=len(docids), scoring="children")
    assert (res.leaves >= 0).all()
    np.testing.assert_allclose(res.scores.exp().sum(1).cpu().numpy(), 1.0, rtol=1e-5)


@pytest.mark.parametrize("scoring", ["vocab", "children"])
def test_rows_with_different_filters_decode_alike_on_both_kernels(scoring: str) -> None:
    """A filter recounts a trie's live counts (``TrieForest.counted``): rows of one batch, each with its own
    counts, decode only their kept docids, and the Triton kernel and the torch reference agree exactly."""
    docids, codec, backend, *_ = make_case(40, 4, seed=7)
    forest, _ = build_forest(["t"], np.zeros(len(docids), dtype=np.int64), codec.encode_many(docids))
    rng = np.random.default_rng(1)
    kept = [np.sort(rng.choice(len(docids), k, replace=False)) for k in (3, 12, 30)]
    rows = [Trie(forest.counted(k).to_device(DEVICE), (0,)) for k in kept]
    enc = backend.encode(QUERIES)
    a = constrained_beam_search(backend, enc, rows, beams=8, kernel_backend="torch", scoring=scoring)
    b = constrained_beam_search(backend, enc, rows, beams=8, kernel_backend="triton", scoring=scoring)
    assert torch.equal(a.leaves, b.leaves)
    np.testing.assert_allclose(a.scores.cpu().numpy(), b.scores.cpu().numpy(), rtol=1e-5, atol=1e-5)
    for row, k in enumerate(kept):
        leaves = a.leaves[row].cpu().numpy()
        found = set(forest.leaf_rank(leaves[leaves >= 0]).tolist())
        assert found and found <= set(k.tolist())


@pytest.mark.parametrize("scoring", ["vocab", "children"])
def test_triton_loop_equals_torch_loop(scoring: str) -> None:
    docids, codec, backend, *_ = make_case(50, 4, seed=5)
    tenant_of = np.array([i % 3 for i in range(len(docids))])
    forest, _ = build_forest(["a", "b", "c"], tenant_of, codec.encode_many(docids))
    d = forest.to_device(DEVICE)
    enc = backend.encode(QUERIES)
    roots = tries(d, [0, 2, 1])  # one batch, three tenants
    a = constrained_beam_search(backend, enc, roots, beams=6, kernel_backend="torch", scoring=scoring)
    b = constrained_beam_search(backend, enc, roots, beams=6, kernel_backend="triton", scoring=scoring)
    assert torch.equal(a.leaves, b.leaves)
    np.testing.assert_allclose(a.scores.cpu().numpy(), b.scores.cpu().numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kernel", ["torch", "triton"])
@pytest.mark.parametrize("scoring", ["vocab", "children"])
def test_teacher_forced_scores_equal_beam_scores(scoring: str, kernel: str) -> None:
    """score_docids gives each docid the score beam search gives it, on either kernel backend; another
    tenant's docid and a deleted one score -inf."""
    docids, codec, backend, *_ = make_case(36, 3, seed=6)
    tenant_of = np.array([i % 2 for i in range(len(docids))])
    alive = np.array([i != 4 for i in range(len(docids))])  # docid 4 (tenant 0) is deleted
    tokens = codec.encode_many(docids)
    forest, order = build_forest(["a", "b"], tenant_of, tokens, alive)
    d = forest.to_device(DEVICE)
    enc = backend.encode(QUERIES[:2])
    res = constrained_beam_search(backend, enc, tries(d, [0, 1]), beams=len(docids), kernel_backend="torch",
                                  scoring=scoring)
    found = [order[forest.leaf_rank(res.leaves[q][res.leaves[q] >= 0].cpu().numpy())] for q in range(2)]
    width = max(len(f) for f in found)
    rows = np.stack([np.concatenate([f, [4, 1 - q] + [f[0]] * (width - len(f))]) for q, f in enumerate(found)])
    forced = torch.cat([score_docids(backend, EncodedQueries(enc.hidden[q : q + 1], enc.mask[q : q + 1]), Trie(d, (q,)),
                                     torch.as_tensor(tokens[rows[q : q + 1]]), scoring, kernel_backend=kernel)
                        for q in range(2)])
    for q, f in enumerate(found):
        beam = res.scores[q][res.leaves[q] >= 0]
        np.testing.assert_allclose(forced[q, : len(f)].cpu().numpy(), beam.cpu().numpy(), rtol=1e-5, atol=1e-5)
        assert torch.isinf(forced[q, len(f)]) and torch.isinf(forced[q, len(f) + 1])  # deleted; other tenant


def test_unconstrained_loop_runs_the_same_steps() -> None:
    docids, codec, backend, *_ = make_case(20, 3, seed=6)
    res = unconstrained_beam_search(backend, backend.encode(QUERIES), beams=4, max_steps=codec.max_length + 1)
    assert res.steps <= codec.max_length + 1
    assert (res.scores[:, 1:] <= res.scores[:, :-1]).all()


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), tenants=st.integers(1, 3), n=st.integers(1, 40), beams=st.integers(1, 8),
       dead=st.floats(0.0, 0.9), scoring=st.sampled_from(["vocab", "children"]),
       kernel=st.sampled_from(["torch", "triton"]))
def test_every_decoded_docid_exists_in_its_tenants_namespace(seed: int, tenants: int, n: int, beams: int,
                                                              dead: float, scoring: str, kernel: str) -> None:
    rng = np.random.default_rng(seed)
    docids = [d for d in CASE_DOCIDS if rng.random() < 0.9][:n] or CASE_DOCIDS[:1]
    tenant_of = rng.integers(0, tenants, len(docids))
    alive = rng.random(len(docids)) >= dead
    names = [f"t{i}" for i in range(tenants)]
    forest, order = build_forest(names, tenant_of, CASE_CODEC.encode_many(docids), alive=alive)
    roots = torch.as_tensor(rng.integers(0, tenants, 2))
    res = constrained_beam_search(CASE_BACKEND, CASE_BACKEND.encode(QUERIES[:2]),
                                  tries(forest.to_device(DEVICE), roots.tolist()), beams, kernel_backend=kernel,
                                  scoring=scoring)
    for q in range(2):
        found = [int(x) for x in res.leaves[q].tolist() if x >= 0]
        rows = order[forest.leaf_rank(np.array(found, dtype=np.int64))] if found else np.zeros(0, dtype=np.int64)
        assert (forest.leaf_rank(np.array(found, dtype=np.int64)) >= 0).all()
        for row in rows:
            assert alive[row] and tenant_of[row] == int(roots[q])
            assert forest.walk(names[int(roots[q])], [t for t in CASE_CODEC.encode(docids[row]) if t > 1]) >= 0
        expected = min(beams, int((alive & (tenant_of == int(roots[q]))).sum()))
        assert len(found) == expected and len(set(found)) == len(found)


CASE_DOCIDS, CASE_CODEC, CASE_BACKEND, *_ = make_case(40, 3, seed=9)


def test_atomic_scores_normalise_over_the_callers_own_documents_only() -> None:
    """Atomic docids: each token is one document. A tenant's vocab scores come from its own tokens (and EOS):
    changing the model rows of another tenant's documents, or of a free token, changes none of them."""
    codec = AtomicCodec(12)
    ns = build_namespaces(codec, {"a": [(f"pa{i}", str(i)) for i in range(0, 10, 2)],
                                  "b": [(f"pb{i}", str(i)) for i in range(1, 10, 2)]})
    a, b = ns.get("a"), ns.get("b")
    assert a is not None and b is not None
    assert sorted(a.first_tokens().tolist()) == [2, 4, 6, 8, 10] and sorted(b.first_tokens().tolist()) == [3, 5, 7, 9, 11]
    model, tok, spec = build_tiny_model(codec.vocab_size, seed=7)
    backend = HFSeq2SeqBackend(model, tok, spec, DEVICE)
    enc, forest = backend.encode(QUERIES[:1]), a.base.forest.to_device(DEVICE)
    own = Trie(forest, (0,), torch.from_numpy(a.first_tokens()).to(DEVICE))

    def search(trie: Trie) -> tuple[torch.Tensor, torch.Tensor]:
        res = constrained_beam_search(backend, enc, [trie], beams=5)
        return res.leaves, res.scores

    leaves, scores = search(own)
    shared_scores = search(Trie(forest))[1]
    with torch.no_grad():
        backend.head.weight[[3, 5, 13]] += 3.0  # b's docids 1 and 3, and the free docid 11
    assert all(torch.equal(x, y) for x, y in zip(search(own), (leaves, scores), strict=True))
    assert not torch.equal(search(Trie(forest))[1], shared_scores)  # over the whole vocabulary they would move
    tokens = torch.as_tensor(a.base.tokens[a.base.forest.leaf_rank(leaves[0].cpu().numpy())].astype(np.int64)).unsqueeze(0)
    forced = score_docids(backend, enc, own, tokens)
    np.testing.assert_allclose(forced[0].cpu().numpy(), scores[0].cpu().numpy(), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("scoring", ["vocab", "children"])
def test_a_batch_mixing_tenants_tries_equals_each_tenant_decoded_alone(scoring: str) -> None:
    """Queries of different tenants (each with its own single-root trie) decode in one batch exactly as
    they decode alone."""
    docids, codec, backend, *_ = make_case(30, 3, seed=11)
    ns = build_namespaces(codec, {"a": [(f"pa{i}", d) for i, d in enumerate(docids[:18])],
                                  "b": [(f"pb{i}", d) for i, d in enumerate(docids[12:])]})
    trie = {t: Trie(n.base.forest.to_device(DEVICE)) for t, n in ns.by_tenant.items()}
    order = ["a", "b", "a"]
    enc = backend.encode(QUERIES)
    together = constrained_beam_search(backend, enc, [trie[t] for t in order], beams=4, scoring=scoring)
    for q, t in enumerate(order):
        alone = constrained_beam_search(backend, EncodedQueries(enc.hidden[q : q + 1], enc.mask[q : q + 1]), [trie[t]],
                                        beams=4, scoring=scoring)
        assert torch.equal(together.leaves[q], alone.leaves[0])
        np.testing.assert_allclose(together.scores[q].cpu().numpy(), alone.scores[0].cpu().numpy(), rtol=1e-5,
                                   atol=1e-5)


def tries(forest: DeviceForest, roots: Sequence[int]) -> list[Trie]:
    return [Trie(forest, (int(r),)) for r in roots]


# Decoding every step with no host sync (what a CUDA graph captures) decodes what the eager loop does.
@pytest.mark.parametrize("scoring", ["vocab", "children"])
def test_running_every_step_decodes_what_stopping_early_does(scoring: str) -> None:
    """Docids of different lengths: beams that end early carry themselves through the extra steps."""
    docids, codec, backend, *_ = make_case(60, 3, seed=3)
    tokens = codec.encode_many(docids)
    assert len({int((row > 1).sum()) for row in tokens}) > 1  # docids of several lengths
    forest, _ = build_forest(["a", "b"], np.arange(len(docids)) % 2, tokens)
    t = tries(forest.to_device(DEVICE), [0, 1, 0])
    enc = backend.encode(QUERIES)
    step = trie_step_fn(backend, t, 8, "torch", scoring)
    out = []
    for until_done in (True, False):
        nodes, scores = start_beams([x.roots for x in t], 8, DEVICE)
        out.append(run_beams(backend, enc, nodes, scores, 8, forest.max_depth + 3, step, until_done=until_done))
    assert out[1].steps == forest.max_depth + 3 and out[0].steps <= forest.max_depth
    assert torch.equal(out[0].leaves, out[1].leaves)
    torch.testing.assert_close(out[0].scores, out[1].scores)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without a GPU")
def test_a_graph_needs_a_cuda_device() -> None:
    docids, codec, backend, *_ = make_case(10, 3, seed=0)
    forest, _ = build_forest(["t"], np.zeros(len(docids), dtype=np.int64), codec.encode_many(docids))
    with pytest.raises(ValueError, match="CUDA device"):
        GraphedDecode(backend, backend.encode(QUERIES), tries(forest.to_device(DEVICE), [0, 0, 0]), 4)


@pytest.mark.gpu
@pytest.mark.parametrize("scoring", ["vocab", "children"])
def test_a_replayed_graph_decodes_as_the_eager_loop(scoring: str) -> None:
    docids, codec, backend, *_ = make_case(80, 4, seed=4)
    forest, _ = build_forest(["a", "b"], np.arange(len(docids)) % 2, codec.encode_many(docids))
    t = tries(forest.to_device(DEVICE), [0, 1, 0])
    graph = GraphedDecode(backend, backend.encode(QUERIES), t, 6, scoring=scoring)
    for texts in (QUERIES, QUERIES[::-1]):  # same shape, other queries: the graph reads its input buffers
        enc = backend.encode(texts)
        want = constrained_beam_search(backend, enc, t, 6, scoring=scoring)
        got = graph(enc)
        assert torch.equal(got.leaves, want.leaves)
        torch.testing.assert_close(got.scores, want.scores, rtol=1e-5, atol=1e-5)

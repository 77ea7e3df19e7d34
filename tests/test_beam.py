from __future__ import annotations

import numpy as np
import torch

from genret.beam import constrained_beam_search
from genret.docids import SemanticCodec, assign_semantic
from genret.modeling import HFSeq2SeqBackend, build_tiny_model
from genret.train import sequence_loss
from genret.trie import build_forest

QUERIES = ["wing flutter at supersonic speed", "heat transfer in boundary layers", "x"]


def make_case(n_docs: int, branching: int, seed: int):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    docids = assign_semantic(rng.normal(size=(n_docs, 8)).astype(np.float32), branching, seed)
    depth = max(len(d.split("-")) for d in docids)
    codec = SemanticCodec(branching, depth)
    model, tok, spec = build_tiny_model(codec.vocab_size, seed=seed)
    return docids, codec, HFSeq2SeqBackend(model, tok, spec, torch.device("cpu")), model, tok, spec


def brute_force(model, tok, spec, codec, docids, query):  # type: ignore[no-untyped-def]
    """Sequence log-probability of every docid by teacher forcing."""
    labels = torch.as_tensor(codec.encode_many(docids))
    labels = torch.where(labels == 0, torch.full_like(labels, -100), labels)
    batch = tok([query] * len(docids), return_tensors="pt", truncation=True, max_length=64)
    with torch.no_grad():
        nll = sequence_loss(model, spec, labels, input_ids=batch["input_ids"],
                            attention_mask=batch["attention_mask"], reduction="none")
    return (-nll).numpy()


def test_exhaustive_beam_equals_brute_force() -> None:
    docids, codec, backend, model, tok, spec = make_case(40, 4, seed=1)
    forest = build_forest(["t"], np.zeros(len(docids), dtype=np.int64), codec.encode_many(docids))
    enc = backend.encode(QUERIES)
    res = constrained_beam_search(backend, enc, torch.zeros(len(QUERIES), dtype=torch.long),
                                  forest.to_device(torch.device("cpu")), beams=len(docids))
    for q, query in enumerate(QUERIES):
        ref = brute_force(model, tok, spec, codec, docids, query)
        got_docs = [int(forest.leaf_value[n]) for n in res.leaves[q].tolist()]
        assert sorted(got_docs) == list(range(len(docids)))  # every docid, each once
        np.testing.assert_allclose(res.scores[q].numpy(), np.sort(ref)[::-1], rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(res.scores[q].numpy(), ref[got_docs], rtol=1e-4, atol=1e-4)


def test_narrow_beam_returns_only_existing_docids_of_the_right_tenant() -> None:
    docids, codec, backend, *_ = make_case(30, 3, seed=2)
    tenant_of = np.array([i % 2 for i in range(len(docids))])
    forest = build_forest(["a", "b"], tenant_of, codec.encode_many(docids))
    enc = backend.encode(QUERIES[:2])
    res = constrained_beam_search(backend, enc, torch.tensor([0, 1]), forest.to_device(torch.device("cpu")),
                                  beams=5)
    for q, tenant in enumerate([0, 1]):
        scores = res.scores[q].tolist()
        assert scores == sorted(scores, reverse=True)
        for leaf in res.leaves[q].tolist():
            assert leaf >= 0
            assert tenant_of[forest.leaf_value[leaf]] == tenant


def test_tenant_with_fewer_docids_than_beams_pads_with_empty() -> None:
    docids, codec, backend, *_ = make_case(6, 3, seed=3)
    tenant_of = np.array([0] * 5 + [1])
    forest = build_forest(["a", "b"], tenant_of, codec.encode_many(docids))
    enc = backend.encode(QUERIES[:1])
    res = constrained_beam_search(backend, enc, torch.tensor([1]), forest.to_device(torch.device("cpu")),
                                  beams=4)
    assert res.leaves[0, 0] >= 0 and forest.leaf_value[int(res.leaves[0, 0])] == 5
    assert (res.leaves[0, 1:] == -1).all() and torch.isinf(res.scores[0, 1:]).all()

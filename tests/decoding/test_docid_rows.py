"""Docid rows of the model's output layer: seeded from document embeddings, grown for added documents."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from genret.decoding.model import HFSeq2SeqBackend, seed_docid_embeddings
from genret.indexing.models import build_tiny_model, grow_docid_vocab, load_checkpoint_for_docids

CPU = torch.device("cpu")


def _features(backend: HFSeq2SeqBackend, texts: list[str], tokens: list[int]) -> list[torch.Tensor]:
    """Decoder output features at the start step and after feeding ``tokens`` (one per query)."""
    state = backend.start(backend.encode(texts), beams=1)
    first = backend.step(state, None)
    return [first, backend.step(state, torch.tensor(tokens))]


def test_seeded_rows_are_unit_document_vectors() -> None:
    model, _, spec = build_tiny_model(8)  # hidden 64
    vectors = np.random.default_rng(0).normal(size=(3, 64)).astype(np.float32) * 5
    seed_docid_embeddings(model, spec, [2, 5, 7], vectors)
    layer = model.get_output_embeddings()
    rows = layer.weight.detach()[[2, 5, 7]].numpy()
    np.testing.assert_allclose(rows, vectors / np.linalg.norm(vectors, axis=1, keepdims=True), atol=1e-6)
    assert float(layer.bias.detach()[[2, 5, 7]].abs().sum()) == 0.0
    tied = model.get_decoder().get_input_embeddings().weight.detach()[[2, 5, 7]].numpy()
    np.testing.assert_array_equal(tied, rows)  # the docid token fed back in starts there too


def test_seeding_needs_one_vector_of_the_model_width_per_token() -> None:
    model, _, spec = build_tiny_model(8)
    with pytest.raises(ValueError, match="384 dimensions"):
        seed_docid_embeddings(model, spec, [2, 3], np.ones((2, 384), dtype=np.float32))
    with pytest.raises(ValueError, match="one vector per docid token"):
        seed_docid_embeddings(model, spec, [2, 3, 4], np.ones((2, 64), dtype=np.float32))


def test_growing_the_default_model_keeps_what_it_computes() -> None:
    model, tok, spec = build_tiny_model(6)
    texts, tokens = ["supersonic wing flutter", "heat transfer"], [3, 5]
    before = _features(HFSeq2SeqBackend(model, tok, spec, CPU), texts, tokens)
    old_rows = model.get_output_embeddings().weight.detach()[:6].clone()
    grown = grow_docid_vocab(model, spec, 4)
    assert (grown.docid_vocab, grown.start_token) == (10, 10) and model.config.decoder_start_token_id == 10
    backend = HFSeq2SeqBackend(model, tok, grown, CPU)
    assert backend.head.weight.shape == (10, 64)
    torch.testing.assert_close(backend.head.weight[:6], old_rows, rtol=0, atol=0)
    for a, b in zip(before, _features(backend, texts, tokens), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)  # the start token moved with its embedding


def test_growing_a_checkpoint_appends_docid_tokens(tiny_t5: Path) -> None:
    model, tok, spec = load_checkpoint_for_docids(tiny_t5, 6)
    texts, tokens = ["shock waves", "boundary layer"], [2, 4]
    before = _features(HFSeq2SeqBackend(model, tok, spec, CPU), texts, tokens)
    grown = grow_docid_vocab(model, spec, 3)
    assert grown.docid_vocab == 9 and grown.start_token == spec.start_token
    assert model.get_output_embeddings().weight.shape[0] == spec.token_offset + 9
    for a, b in zip(before, _features(HFSeq2SeqBackend(model, tok, grown, CPU), texts, tokens), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)

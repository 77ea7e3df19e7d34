"""Any local Hugging Face seq2seq checkpoint (here a tiny T5 built on the spot) trains and decodes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from genret.decoding.beam import Trie, constrained_beam_search
from genret.decoding.model import HFSeq2SeqBackend
from genret.decoding.trie import build_forest
from genret.docids import AtomicCodec
from genret.indexing.models import build_default_model, load_checkpoint_for_docids
from genret.indexing.training import TrainConfig, train


def test_local_t5_checkpoint_learns_docids(tiny_t5: Path, minilm_tokenizer) -> None:  # type: ignore[no-untyped-def]
    codec = AtomicCodec(4)
    model, tok, spec = load_checkpoint_for_docids(tiny_t5, codec.vocab_size)
    assert spec.kind == "checkpoint" and spec.token_offset == minilm_tokenizer.vocab_size
    texts = ["supersonic wing flutter", "heat transfer in pipes", "boundary layer suction", "shock waves"]
    labels = codec.encode_many(["0", "1", "2", "3"])
    rows = [r[: int((r != 0).sum())] for r in labels]
    train(model, tok, spec, texts * 8, rows * 8, TrainConfig(epochs=40, batch_size=8, encoder_lr=1e-2,
                                                               decoder_lr=1e-2, progress=False),
          torch.device("cpu"))
    forest, order = build_forest(["t"], np.zeros(4, dtype=np.int64), labels)
    backend = HFSeq2SeqBackend(model, tok, spec, torch.device("cpu"))
    res = constrained_beam_search(backend, backend.encode(texts), [Trie(forest.to_device(torch.device("cpu")))] * 4,
                                  beams=2)
    top = order[forest.leaf_rank(res.leaves[:, 0].numpy())].tolist()
    assert top == [0, 1, 2, 3]


def test_the_default_model_without_pretrained_weights_has_the_same_shape() -> None:
    """``pretrained=False`` (speed measurements where MiniLM's weights are absent): every parameter of the
    default model, with the encoder's random."""
    real, _, spec = build_default_model(10)
    shaped, _, spec2 = build_default_model(10, pretrained=False)
    assert spec == spec2
    a, b = dict(real.named_parameters()), dict(shaped.named_parameters())
    assert {k: v.shape for k, v in a.items()} == {k: v.shape for k, v in b.items()}
    word = "encoder.embeddings.word_embeddings.weight"
    assert not torch.equal(a[word], b[word])

"""Any local Hugging Face seq2seq checkpoint (here a tiny T5 built on the spot) trains and decodes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from transformers import T5Config, T5ForConditionalGeneration

from genret.beam import constrained_beam_search
from genret.docids import AtomicCodec
from genret.modeling import HFSeq2SeqBackend, load_checkpoint_for_docids
from genret.train import TrainConfig, train
from genret.trie import build_forest


def test_local_t5_checkpoint_learns_docids(tmp_path: Path, minilm_tokenizer) -> None:  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    cfg = T5Config(vocab_size=minilm_tokenizer.vocab_size, d_model=32, d_kv=8, d_ff=64, num_layers=1,
                   num_decoder_layers=1, num_heads=2, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    T5ForConditionalGeneration(cfg).save_pretrained(tmp_path / "t5")
    minilm_tokenizer.save_pretrained(tmp_path / "t5")

    codec = AtomicCodec(4)
    model, tok, spec = load_checkpoint_for_docids(tmp_path / "t5", codec.vocab_size)
    assert spec.kind == "checkpoint" and spec.token_offset == minilm_tokenizer.vocab_size
    texts = ["supersonic wing flutter", "heat transfer in pipes", "boundary layer suction", "shock waves"]
    labels = codec.encode_many(["0", "1", "2", "3"])
    rows = [r[: int((r != 0).sum())] for r in labels]
    train(model, tok, spec, texts * 8, rows * 8, TrainConfig(epochs=40, batch_size=8, encoder_lr=1e-2,
                                                               decoder_lr=1e-2, progress=False),
          torch.device("cpu"))
    forest, order = build_forest(["t"], np.zeros(4, dtype=np.int64), labels)
    backend = HFSeq2SeqBackend(model, tok, spec, torch.device("cpu"))
    res = constrained_beam_search(backend, backend.encode(texts), torch.zeros(4, dtype=torch.long),
                                  forest.to_device(torch.device("cpu")), beams=2)
    top = order[forest.leaf_rank(res.leaves[:, 0].numpy())].tolist()
    assert top == [0, 1, 2, 3]

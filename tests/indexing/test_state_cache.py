"""Frozen-encoder states on disk: reused for the same encoder and inputs, never for another encoder."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from genret.indexing.models import build_tiny_model
from genret.indexing.state_cache import cached_states, encoder_fingerprint
from genret.indexing.training import encode_inputs

CPU = torch.device("cpu")


def test_states_come_back_from_the_cache_exactly(tmp_path: Path) -> None:
    model, tok, _ = build_tiny_model(6)
    encoder = model.get_encoder()
    texts = ["supersonic wing flutter", "heat transfer in pipes", "supersonic wing flutter", "shock waves"]
    ids = [torch.tensor(x) for x in tok(texts)["input_ids"]]
    encoded: list[int] = []

    def encode(batch: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        encoded.append(len(batch))
        return encode_inputs(encoder, batch, CPU, 2, False)

    first = cached_states(tmp_path, encoder, ids, encode)
    assert encoded == [3]  # a repeated input is encoded once
    again = cached_states(tmp_path, encoder, ids[1:], encode)
    assert encoded == [3]  # everything from the cache
    direct = encode_inputs(encoder, ids, CPU, 4, False)
    for a, b in zip([*first, *again], [*direct, *direct[1:]], strict=True):
        assert torch.equal(a, b)

    other, _, _ = build_tiny_model(6, seed=1)  # other weights: its own file, encoded afresh
    assert encoder_fingerprint(other.get_encoder()) != encoder_fingerprint(encoder)
    cached_states(tmp_path, other.get_encoder(), ids, lambda b: encode_inputs(other.get_encoder(), b, CPU, 2, False))
    assert len(list(tmp_path.glob("encoder-*.pt"))) == 2 and not list(tmp_path.glob("*.tmp*"))

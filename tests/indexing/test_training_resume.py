"""A training run stopped after an epoch resumes from its saved state and ends where an unbroken run ends."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from genret.docids import AtomicCodec
from genret.indexing.models import build_tiny_model
from genret.indexing.training import TrainConfig, train

TEXTS = ["supersonic wing flutter", "heat transfer in pipes", "boundary layer suction", "shock waves"] * 4
CFG = TrainConfig(epochs=4, batch_size=4, decoder_lr=3e-3, encoder_lr=3e-3, progress=False, seed=1,
                  checkpoint_every_s=0)


def _rows() -> list:  # type: ignore[type-arg]
    labels = AtomicCodec(4).encode_many(["0", "1", "2", "3"] * 4)
    return [r[: int((r != 0).sum())] for r in labels]


def _weights(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


class Crash(Exception):
    pass


def _crash_after_two(epoch: int) -> None:
    if epoch == 2:
        raise Crash


def test_a_stopped_run_resumes_after_its_last_epoch_and_ends_the_same(tmp_path: Path) -> None:
    model, tok, spec = build_tiny_model(AtomicCodec(4).vocab_size, seed=1)
    train(model, tok, spec, TEXTS, _rows(), CFG, torch.device("cpu"))
    unbroken = _weights(model)

    state = tmp_path / "state.pt"

    model, tok, spec = build_tiny_model(AtomicCodec(4).vocab_size, seed=1)
    with pytest.raises(Crash):
        train(model, tok, spec, TEXTS, _rows(), CFG, torch.device("cpu"), on_epoch=_crash_after_two, state_path=state)
    assert state.exists()

    model, tok, spec = build_tiny_model(AtomicCodec(4).vocab_size, seed=1)  # a new process starts afresh
    epochs: list[int] = []
    stats = train(model, tok, spec, TEXTS, _rows(), CFG, torch.device("cpu"), on_epoch=epochs.append,
                  state_path=state)
    assert epochs == [3, 4]  # epochs 1 and 2 were not trained again
    assert stats.steps == 16
    for a, b in zip(unbroken, _weights(model), strict=True):
        assert torch.equal(a, b)


def test_a_state_of_other_pairs_or_settings_is_not_resumed(tmp_path: Path) -> None:
    state = tmp_path / "state.pt"
    model, tok, spec = build_tiny_model(AtomicCodec(4).vocab_size, seed=1)
    train(model, tok, spec, TEXTS, _rows(), CFG, torch.device("cpu"), state_path=state)
    epochs: list[int] = []
    model, tok, spec = build_tiny_model(AtomicCodec(4).vocab_size, seed=1)
    train(model, tok, spec, TEXTS[::-1], _rows(), CFG, torch.device("cpu"), on_epoch=epochs.append, state_path=state)
    assert epochs == [1, 2, 3, 4]


def test_the_state_is_saved_at_most_every_checkpoint_interval(tmp_path: Path) -> None:
    state = tmp_path / "state.pt"
    hourly = replace(CFG, checkpoint_every_s=3600)
    model, tok, spec = build_tiny_model(AtomicCodec(4).vocab_size, seed=1)
    with pytest.raises(Crash):
        train(model, tok, spec, TEXTS, _rows(), hourly, torch.device("cpu"), on_epoch=_crash_after_two, state_path=state)
    assert not state.exists()  # two epochs within the hour: nothing saved, a rerun starts afresh
    epochs: list[int] = []
    model, tok, spec = build_tiny_model(AtomicCodec(4).vocab_size, seed=1)
    train(model, tok, spec, TEXTS, _rows(), hourly, torch.device("cpu"), on_epoch=epochs.append, state_path=state)
    assert epochs == [1, 2, 3, 4]
    with pytest.raises(ValueError, match="--checkpoint-every-s must be at least 0"):
        replace(CFG, checkpoint_every_s=-1)

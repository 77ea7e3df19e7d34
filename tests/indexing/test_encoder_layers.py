"""The encoder cut at a layer: both halves give the encoder's output exactly, only the top layers train, and
the states below the cut are cached apart from the last layer's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from genret.indexing.encoder_layers import LowerLayers, TopLayers, check_cut
from genret.indexing.models import build_tiny_model, encoder_depth
from genret.indexing.state_cache import encoder_fingerprint
from genret.indexing.training import TrainConfig, sequence_loss, train

CPU = torch.device("cpu")
TEXTS = ["alpha beta", "gamma delta epsilon zeta eta", "theta", "iota kappa lambda"]


def test_the_halves_give_the_encoder_output_at_every_cut() -> None:
    model, tok, _ = build_tiny_model(6, layers=4)
    encoder = model.get_encoder().eval()
    batch = tok(TEXTS, return_tensors="pt", padding=True)  # padded rows: the mask must reach the top layers
    ids, mask = batch["input_ids"], batch["attention_mask"]
    with torch.no_grad():
        full = encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        for keep in range(1, 4):
            mid = LowerLayers(encoder, keep)(ids, mask).last_hidden_state
            out = TopLayers(encoder, keep)(mid, mask)
            real = mask.bool()
            torch.testing.assert_close(out[real], full[real], rtol=1e-5, atol=1e-6)
            assert not torch.allclose(mid[real], full[real])  # the cut is not the last layer
    assert len(encoder.encoder.layer) == 4  # the encoder's own layers are back after each call


def test_each_half_holds_its_own_parameters_and_fingerprint() -> None:
    model, _, _ = build_tiny_model(6, layers=4)
    encoder = model.get_encoder()
    top = {id(p) for p in TopLayers(encoder, 3).parameters()}
    assert top == {id(p) for p in encoder.encoder.layer[3].parameters()}
    lower = {id(p) for p in LowerLayers(encoder, 3).parameters()}
    assert not lower & top and lower | top == {id(p) for p in encoder.parameters()}
    prints = {encoder_fingerprint(encoder), *(encoder_fingerprint(LowerLayers(encoder, k)) for k in (1, 2, 3))}
    assert len(prints) == 4  # states cut elsewhere, or the last layer's, never share a cache file


@pytest.mark.parametrize("top", [0, 4, 5])
def test_a_cut_outside_the_encoder_is_refused(top: int) -> None:
    model, _, _ = build_tiny_model(6, layers=4)
    with pytest.raises(ValueError, match="between 1 and 3"):
        check_cut(model.get_encoder(), top)


def _refused_before_any_work(tmp_path: Path, model: str, top: int) -> None:
    from genret.cli import build_parser, index_options
    from genret.indexing.indexer import build_index

    args = ["index", "--model", model, "--freeze-encoder", "--train-encoder-layers", str(top)]
    build_index(None, tmp_path, index_options(build_parser().parse_args(args)), CPU)  # no store: never read


@pytest.mark.parametrize("model, top", [("tiny", 2), ("default", 6)])
def test_a_build_refuses_a_cut_outside_the_encoder_before_any_work(tmp_path: Path, model: str, top: int) -> None:
    with pytest.raises(ValueError, match="between 1 and"):
        _refused_before_any_work(tmp_path, model, top)


def test_a_checkpoint_is_checked_from_its_config_before_any_work(tmp_path: Path, tiny_t5: Path) -> None:
    model, tok, _ = build_tiny_model(6, layers=3)
    model.save_pretrained(tmp_path / "bert")
    tok.save_pretrained(tmp_path / "bert")
    assert encoder_depth(str(tmp_path / "bert")) == 3
    with pytest.raises(ValueError, match="between 1 and 2 for this 3-layer"):
        _refused_before_any_work(tmp_path / "idx", str(tmp_path / "bert"), 3)
    with pytest.raises(ValueError, match="BERT-style encoder .* not the t5 checkpoint"):
        _refused_before_any_work(tmp_path / "idx", str(tiny_t5), 1)
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        _refused_before_any_work(tmp_path / "idx", str(tmp_path / "missing"), 1)


def test_top_layers_need_a_frozen_encoder() -> None:
    with pytest.raises(ValueError, match="needs --freeze-encoder"):
        TrainConfig(train_encoder_layers=1)
    with pytest.raises(ValueError, match="at least 0"):
        TrainConfig(freeze_encoder=True, train_encoder_layers=-1)


def test_training_moves_the_top_layers_only_and_learns(tmp_path: Path) -> None:
    model, tok, spec = build_tiny_model(6, layers=3, seed=0)
    encoder = model.get_encoder()
    before = {n: p.detach().clone() for n, p in encoder.named_parameters()}
    rows = [np.array([2 + i, 1]) for i in range(len(TEXTS))]
    labels = torch.tensor([[2 + i, 1] for i in range(len(TEXTS))])
    enc = tok(TEXTS, return_tensors="pt", padding=True)

    def loss() -> float:
        with torch.no_grad():
            return float(sequence_loss(model, spec, labels, enc["input_ids"], enc["attention_mask"]))

    start = loss()
    cfg = TrainConfig(epochs=30, batch_size=4, decoder_lr=3e-3, encoder_lr=3e-3, freeze_encoder=True,
                      train_encoder_layers=1, encoder_cache=str(tmp_path), progress=False)
    train(model, tok, spec, TEXTS, rows, cfg, CPU)
    moved = {n for n, p in encoder.named_parameters() if not torch.equal(p, before[n])}
    assert moved and all(n.startswith("encoder.layer.2.") for n in moved)  # the top layer of three, nothing below
    assert loss() < 0.5 * start  # the full model (its encoder whole) learned the pairs
    assert len(list(tmp_path.glob("encoder-*.pt"))) == 1  # the states below the cut were cached

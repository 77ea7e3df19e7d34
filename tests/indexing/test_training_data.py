"""Rehearsal contents, replay memory, sharpness-aware training and input dropout, with a tiny real model."""

from __future__ import annotations

import numpy as np
import torch

from genret.indexing.models import build_tiny_model
from genret.indexing.pairs import key_sentences, sentences
from genret.indexing.querygen import QueryCache
from genret.indexing.training import TrainConfig, drop_tokens, sequence_loss, train
from genret.indexing.training_data import PairOptions, document_data, replay_pairs

DOC = ("d1", "Wing in a slipstream",
       "An experimental study of a wing in a propeller slipstream was made . "
       "The weather was fine that day and nothing else happened . "
       "The lift increase of the wing due to the slipstream was measured at several angles of attack .")


def test_key_sentences_pick_the_central_sentences_in_text_order() -> None:
    other = ("d2", "Cones", "Heat transfer to a cone in hypersonic flow was measured . It rose with the Mach number .")
    got = key_sentences([DOC, other], per_doc=2)
    sents = sentences(DOC[2])
    assert got["d1"] == [sents[0], sents[2]]  # the off-topic sentence is left out, order kept
    assert len(got["d2"]) == 2 and key_sentences([DOC], 0) == {"d1": []}


def test_document_data_kinds_and_memory(tmp_path) -> None:  # type: ignore[no-untyped-def]
    data = document_data([DOC], PairOptions(max_chunks=0, rehearsal=1), torch.device("cpu"),
                         QueryCache(tmp_path / "q.jsonl"))
    assert data.counts()["doc"] == 1 and data.counts()["rehearsal"] == 1 and data.counts()["generated"] == 0
    assert data.memory["d1"] == [p.text for p in data.pairs if p.kind == "rehearsal"]  # no queries: key sentences
    assert not (tmp_path / "q.jsonl").exists()  # no generation asked for


def test_replay_covers_every_old_document_and_skips_deleted_ones() -> None:
    memory = [{"tenant": "t", "doc_id": f"d{i}", "docid": f"{i}", "texts": [f"q{i}a", f"q{i}b"]} for i in range(10)]
    live = {("t", f"d{i}") for i in range(10) if i != 3}
    texts, docids = replay_pairs(memory, live, count=9, seed=0)
    assert sorted(docids) == sorted(f"{i}" for i in range(10) if i != 3)  # each live document once
    assert all(t in (f"q{d}a", f"q{d}b") for t, d in zip(texts, docids, strict=True))
    texts, docids = replay_pairs(memory, live, count=20, seed=0)
    assert len(docids) == 20 and set(docids) == {f"{i}" for i in range(10) if i != 3}
    assert replay_pairs(memory, set(), 5, 0) == ([], [])


def _fit(rho: float = 0.0, dropout: float = 0.0) -> tuple[torch.nn.Module, float, float]:
    model, tok, spec = build_tiny_model(6, seed=0)
    texts = ["alpha beta", "gamma delta", "epsilon zeta", "eta theta"]
    rows = [np.array([2 + i, 1]) for i in range(4)]
    labels = torch.tensor([[2 + i, 1] for i in range(4)])
    enc = tok(texts, return_tensors="pt", padding=True)

    def loss() -> float:
        with torch.no_grad():
            return float(sequence_loss(model, spec, labels, enc["input_ids"], enc["attention_mask"]))

    before = loss()
    cfg = TrainConfig(epochs=25, batch_size=4, decoder_lr=3e-3, encoder_lr=3e-3, sam_rho=rho, input_dropout=dropout,
                      progress=False)
    train(model, tok, spec, texts, rows, cfg, torch.device("cpu"))
    return model, before, loss()


def test_sam_training_learns_and_takes_other_steps() -> None:
    sam, before, after = _fit(0.05)
    plain, _, _ = _fit(0.0)
    assert after < 0.5 * before
    diff = max(float((a - b).detach().abs().max()) for a, b in zip(sam.parameters(), plain.parameters(), strict=True))
    assert diff > 1e-4  # the perturbed gradients changed the trajectory


def test_input_dropout_hides_tokens_but_never_the_first() -> None:
    torch.manual_seed(0)
    mask = torch.ones(64, 40, dtype=torch.long)
    mask[:, 30:] = 0  # padding stays hidden
    dropped = drop_tokens(mask, 0.25)
    assert bool((dropped[:, 0] == 1).all()) and int(dropped[:, 30:].sum()) == 0
    assert bool((dropped <= mask).all())
    share = 1 - float(dropped[:, 1:30].float().mean())
    assert 0.2 < share < 0.3, share
    assert torch.equal(drop_tokens(mask, 0.0), mask)


def test_training_with_input_dropout_learns_and_takes_other_steps() -> None:
    dropped, before, after = _fit(dropout=0.3)
    plain, _, _ = _fit()
    assert after < 0.5 * before
    diff = max(float((a - b).detach().abs().max()) for a, b in zip(dropped.parameters(), plain.parameters(),
                                                                   strict=True))
    assert diff > 1e-4

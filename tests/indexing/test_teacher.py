"""Teacher rankings (BM25, dense, fused), soft targets, the round-trip check of generated queries and the
listwise loss, with real BM25, real MiniLM and a tiny real seq2seq model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from genret.indexing.models import build_tiny_model
from genret.indexing.pairs import passage
from genret.indexing.querygen import QueryCache, SamplingSettings, generator_id
from genret.indexing.teacher import Teacher, TeacherOptions
from genret.indexing.training import TrainConfig, docid_logits, listwise_loss, train
from genret.indexing.training_data import PairOptions, generated_queries

CPU = torch.device("cpu")
DOCS = [
    ("d0", "Wing in a slipstream", "The lift of a wing in a propeller slipstream was measured."),
    ("d1", "Hypersonic cones", "Heat transfer to a cone in hypersonic flow rises with the Mach number."),
    ("d2", "Boundary layer transition", "Transition of the boundary layer on a flat plate at low speed."),
    ("d3", "Panel flutter", "Flutter of a thin panel in supersonic flow was observed in a wind tunnel."),
]
PASSAGES = [passage(t, x) for _, t, x in DOCS]


@pytest.mark.parametrize("kind", ["bm25", "dense", "fusion"])
def test_each_teacher_ranks_the_matching_document_first(kind: str) -> None:
    teacher = Teacher(kind, PASSAGES, None, CPU)
    rows, scores = teacher.rank(["heat transfer of a hypersonic cone", "flutter of panels in a wind tunnel"], 3)
    assert rows.shape == (2, 3) and rows[:, 0].tolist() == [1, 3]
    assert (np.diff(scores, axis=1) <= 0).all()  # best first


def test_soft_targets_hold_the_own_document_and_follow_the_teacher() -> None:
    teacher = Teacher("bm25", PASSAGES, None, CPU)
    texts = ["hypersonic cone heat transfer", "hypersonic cone heat transfer"]
    got = teacher.soft_targets(texts, labels=[1, 0], candidates=2, temperature=0.5)
    assert got.rows.shape == got.probs.shape == (2, 2)
    np.testing.assert_allclose(got.probs.sum(1), 1.0, rtol=1e-6)
    first = dict(zip(got.rows[0].tolist(), got.probs[0].tolist(), strict=True))
    assert 1 in first and first[1] == max(first.values())  # the teacher's best is the text's own document
    second = dict(zip(got.rows[1].tolist(), got.probs[1].tolist(), strict=True))
    assert 0 in second and second[0] < second[1]  # own document put in although the teacher ranks it lower
    sharp = teacher.soft_targets(texts[:1], [1], 2, temperature=0.05)
    assert sharp.probs.max() > got.probs[0].max()  # a lower temperature sharpens the target


def test_teacher_options_refuse_nonsense() -> None:
    with pytest.raises(ValueError, match="unknown teacher"):
        TeacherOptions("cross")
    with pytest.raises(ValueError, match="at least 2 candidates"):
        TeacherOptions("bm25", candidates=1)


def test_round_trip_keeps_only_queries_that_lead_back(tmp_path: Path) -> None:
    """Candidates are read from a filled cache (no generator runs); the check drops a query that leads to
    another document and keeps the best passing ones."""
    options = PairOptions(generated_queries=1, query_samples=2, round_trip=1)
    name = generator_id(options.query_generator, SamplingSettings(max_input_tokens=options.query_input_tokens))
    cache = QueryCache(tmp_path / "q.jsonl")
    cands = {0: ["lift of a wing in a propeller slipstream", "flutter of a thin panel"],
             1: ["heat transfer to hypersonic cones", "boundary layer transition on a flat plate"],
             2: ["boundary layer transition at low speed", "wing slipstream lift"],
             3: ["panel flutter in a wind tunnel", "hypersonic cone heating"]}
    cache.put_many([(QueryCache.key(name, PASSAGES[i]), qs) for i, qs in cands.items()])
    teacher = Teacher("bm25", PASSAGES, None, CPU)
    kept, fresh = generated_queries(DOCS, options, cache, CPU, progress=False, teacher=teacher)
    assert fresh == 0
    assert kept == {"d0": [cands[0][0]], "d1": [cands[1][0]], "d2": [cands[2][0]], "d3": [cands[3][0]]}
    assert teacher.round_trip([0, 0], cands[0], 1) == [True, False]
    unchecked, _ = generated_queries(DOCS, PairOptions(generated_queries=2, query_samples=2), cache,
                                     CPU, progress=False)
    assert all(len(v) == 2 for v in unchecked.values())


def test_listwise_loss_is_the_kl_to_the_teacher_over_the_candidates() -> None:
    torch.manual_seed(0)
    first = torch.randn(3, 10)
    tokens = torch.tensor([[1, 4, 7], [0, 2, 9], [5, 6, 8]])
    probs = torch.softmax(torch.randn(3, 3), 1)
    student = torch.log_softmax(first.gather(1, tokens), 1)
    ref = torch.nn.functional.kl_div(student, probs, reduction="batchmean")
    torch.testing.assert_close(listwise_loss(first, tokens, probs), ref)
    matched = first.clone()
    matched.scatter_(1, tokens, probs.log())
    assert float(listwise_loss(matched, tokens, probs)) == pytest.approx(0.0, abs=1e-6)


def test_training_with_teacher_targets_moves_mass_to_the_teachers_candidates() -> None:
    """Each text's label is one docid; the teacher also gives the next docid 40%. Trained with the
    listwise loss the model ranks that neighbour second for every text; without it, it is left near zero."""
    texts = ["wing lift", "cone heat transfer rate", "panel flutter", "boundary layer transition on plates"]
    rows = [np.array([2 + i, 1]) for i in range(4)]
    tokens = torch.tensor([[2 + i, 2 + (i + 1) % 4] for i in range(4)])
    probs = torch.tensor([[0.6, 0.4]] * 4)

    def first_step(soft: tuple[torch.Tensor, torch.Tensor] | None) -> torch.Tensor:
        model, tok, spec = build_tiny_model(6, seed=0)
        cfg = TrainConfig(epochs=60, batch_size=4, decoder_lr=1e-2, encoder_lr=1e-2, progress=False)
        train(model, tok, spec, texts, rows, cfg, CPU, soft=soft)
        enc = tok(texts, return_tensors="pt", padding=True)
        with torch.no_grad():
            return torch.softmax(docid_logits(model, spec, torch.tensor([[2, 1]] * 4), enc["input_ids"],
                                              enc["attention_mask"])[:, 0], 1)

    taught, plain = first_step((tokens, probs)), first_step(None)
    assert taught.argsort(1, descending=True)[:, :2].tolist() == tokens.tolist()
    assert float(taught.gather(1, tokens[:, 1:]).min()) > 0.1 > 0.05 > float(plain.gather(1, tokens[:, 1:]).mean())
    with pytest.raises(ValueError, match="teacher targets"):
        build = build_tiny_model(6, seed=0)
        train(build[0], build[1], build[2], texts, rows, TrainConfig(epochs=1, progress=False), CPU,
              soft=(tokens[:2], probs[:2]))


def test_frozen_states_embed_as_the_dense_retriever_and_keep_the_states() -> None:
    """The default model's frozen encoder is MiniLM: its pooled states are the dense query embeddings
    (up to the bf16 the states are kept in), and each text's states are kept for training."""
    from genret.data.embed import TextEncoder
    from genret.indexing.frozen_states import FrozenStates

    texts = ["heat transfer of a hypersonic cone", "flutter of panels in a wind tunnel"]
    states = FrozenStates(CPU, max_tokens=128, progress=False)
    got = states.embed(texts)
    np.testing.assert_allclose(got, TextEncoder(device=CPU).encode(texts), atol=2e-2)
    assert len(states.states) == 2 and states.embed(texts[:1]).shape == (1, 384) and len(states.states) == 2


def test_frozen_states_read_and_fill_the_encoder_cache(tmp_path: Path) -> None:
    """With an encoder cache, states on disk are read instead of computed: a state planted there is the
    one pooled, and texts not yet there are encoded and added."""
    from genret.indexing.frozen_states import FrozenStates

    texts = ["heat transfer of a hypersonic cone", "flutter of panels in a wind tunnel"]
    first = FrozenStates(CPU, max_tokens=128, progress=False, cache_dir=str(tmp_path))
    plain = first.embed(texts[:1])
    assert len(list(tmp_path.iterdir())) == 1  # the encoded text went to the cache
    ids = first.tokenizer(texts[:1], truncation=True, max_length=128, return_tensors="pt")["input_ids"]
    planted = [torch.ones(ids.shape[1], 384, dtype=torch.bfloat16)]  # states no encoder gives
    path = next(tmp_path.iterdir())
    torch.save(dict(zip(torch.load(path, weights_only=True), planted, strict=True)), path)
    again = FrozenStates(CPU, max_tokens=128, progress=False, cache_dir=str(tmp_path))
    got = again.embed(texts)
    np.testing.assert_allclose(got[0], np.full(384, 384**-0.5), atol=1e-6)  # the planted state, pooled
    assert not np.allclose(got[0], plain[0])
    np.testing.assert_allclose(got[1], FrozenStates(CPU, 128, progress=False).embed(texts[1:])[0], atol=1e-6)
    assert len(torch.load(path, weights_only=True)) == 2  # the second text was added


def test_training_on_known_states_skips_their_encoder_pass_and_learns_the_same() -> None:
    """States handed in (as the teacher's pass leaves them) are used as they are: the same weights come
    out as when training encodes every input itself."""
    from genret.indexing.state_cache import input_key
    from genret.indexing.training import encode_inputs, token_ids

    texts = ["wing lift", "cone heat transfer rate", "panel flutter"]
    rows = [np.array([2 + i, 1]) for i in range(3)]
    cfg = TrainConfig(epochs=3, batch_size=3, freeze_encoder=True, progress=False)
    out = []
    for known in ("none", "encoded", "zeros"):
        model, tok, spec = build_tiny_model(5, seed=0)
        states = None
        if known != "none":
            ids = token_ids(tok, texts, cfg.max_input_tokens)
            encoded = encode_inputs(model.get_encoder(), ids, CPU, 8, False)
            if known == "zeros":  # states no encoder would give: training must use them all the same
                encoded = [torch.zeros_like(x) for x in encoded]
            states = dict(zip([input_key(x) for x in ids], encoded, strict=True))
        train(model, tok, spec, texts, rows, cfg, CPU, known_states=states)
        out.append(model.get_decoder().get_output_embeddings().weight.detach().clone())
    torch.testing.assert_close(out[0], out[1])
    assert not torch.allclose(out[0], out[2])

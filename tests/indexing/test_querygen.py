"""Query generation (DSI-QG) with tiny real language models: sampling, cleaning, ranking, caching."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from genret.indexing.querygen import (
    BiEncoderRanker,
    CrossEncoderRanker,
    GenerationBudget,
    QueryCache,
    QueryGenerator,
    SamplingSettings,
    candidate_queries,
    clean_query,
    generation_batches,
    generation_estimate,
    generator_id,
    load_generator,
    save_tiny_generator,
    select_queries,
)

PASSAGES = ["experimental study of a wing in a propeller slipstream and the lift increase it gives",
            "boundary layer equations for steady incompressible flow past a flat plate",
            "heat transfer to a cone in hypersonic flow"]


@pytest.mark.parametrize("kind", ["causal", "seq2seq"])
def test_tiny_generators_sample_the_asked_number(kind: str, tmp_path: Path) -> None:
    gen = load_generator(str(save_tiny_generator(tmp_path / kind, kind)), torch.device("cpu"),
                         SamplingSettings(max_new_tokens=6))
    out = gen.generate(PASSAGES, samples=3)
    assert len(out) == len(PASSAGES)
    assert all(0 < len(qs) <= 3 and all(q.strip() == q and q for q in qs) for qs in out)
    assert gen.generate(PASSAGES, samples=3) == out  # seeded sampling: the same candidates again


def test_the_packaged_generator_loads_quietly_and_writes_queries(capsys: pytest.CaptureFixture[str]) -> None:
    gen = load_generator("default", torch.device("cpu"), SamplingSettings(max_new_tokens=12))
    assert capsys.readouterr().err == ""  # no progress bar of transformers' own on the command's output
    out = gen.generate(PASSAGES[:1], samples=2)
    assert len(out) == 1 and 0 < len(out[0]) <= 2 and all(q.strip() == q and q for q in out[0])


def test_clean_query_keeps_the_query_only() -> None:
    assert clean_query(' "Query: lift of a wing in a slipstream"\nmore text') == "lift of a wing in a slipstream"
    assert clean_query("1. boundary  layer   flow") == "boundary layer flow"
    assert clean_query("   \n ") == ""


class _Counting(QueryGenerator):
    """Counts calls to a real generator."""

    def __init__(self, inner: QueryGenerator) -> None:
        self.inner, self.name, self.calls = inner, inner.name, 0

    def generate(self, passages, samples):  # type: ignore[no-untyped-def]
        self.calls += len(passages)
        return self.inner.generate(passages, samples)


def test_generated_queries_are_cached_and_reused(tmp_path: Path) -> None:
    path = save_tiny_generator(tmp_path / "gen")
    settings = SamplingSettings(max_new_tokens=5)
    gen = _Counting(load_generator(str(path), torch.device("cpu"), settings))
    cache_file = tmp_path / "q.jsonl"
    first, n = candidate_queries(gen.name, lambda: gen, QueryCache(cache_file), PASSAGES, 2, batch_size=2)
    assert n == 3 and gen.calls == 3 and len(QueryCache(cache_file)) == 3

    def must_not_load() -> QueryGenerator:
        raise AssertionError("a cached passage was generated again")

    again, n2 = candidate_queries(gen.name, must_not_load, QueryCache(cache_file), PASSAGES, 2)
    assert (again, n2) == (first, 0)
    # one new passage: only it is generated
    more, n3 = candidate_queries(gen.name, lambda: gen, QueryCache(cache_file), [*PASSAGES, "supersonic inlet"], 2)
    assert n3 == 1 and gen.calls == 4 and more[:3] == first
    # other settings are another generator: nothing reused
    other = generator_id(str(path), SamplingSettings(max_new_tokens=6))
    assert other != gen.name and all(QueryCache(cache_file).get(QueryCache.key(other, p)) is None for p in PASSAGES)


def _must_not_load() -> QueryGenerator:
    raise AssertionError("the generator was loaded")


def test_a_generation_budget_stops_between_batches_and_a_rerun_continues(tmp_path: Path) -> None:
    gen = _Counting(load_generator(str(save_tiny_generator(tmp_path / "gen")), torch.device("cpu"),
                                   SamplingSettings(max_new_tokens=5)))
    cache_file = tmp_path / "q.jsonl"
    spent = GenerationBudget(0.0)  # no time at all: the generator is not even loaded
    none, n0 = candidate_queries(gen.name, _must_not_load, QueryCache(cache_file), PASSAGES, 2, budget=spent)
    assert (none, n0, spent.spent) == ([[], [], []], 0, 0.0)

    tight = GenerationBudget(1e-9)  # the first batch always runs; it uses the budget up
    part, n1 = candidate_queries(gen.name, lambda: gen, QueryCache(cache_file), PASSAGES, 2, batch_size=2,
                                 budget=tight)
    assert n1 == 2 and gen.calls == 2 and tight.spent > 1e-9
    assert sum(1 for qs in part if qs) == 2 and len(QueryCache(cache_file)) == 2

    rest, n2 = candidate_queries(gen.name, lambda: gen, QueryCache(cache_file), PASSAGES, 2, batch_size=2)
    assert n2 == 1 and gen.calls == 3 and all(rest)  # only the passage not reached is generated
    assert [qs for qs in part if qs] == [r for r, qs in zip(rest, part, strict=True) if qs]


def test_generation_batches_spread_over_the_collection_pad_little_and_start_at_a_middle_length() -> None:
    passages = ["word " * n for n in range(70)]  # passage i has i words
    batches = generation_batches(range(70), passages, batch_size=4)
    assert sorted(i for b in batches for i in b) == list(range(70))
    assert [len(b) for b in batches] == [4] * 17 + [2]  # the last block's short batch is its longest
    blocks = [batches[:8], batches[8:16], batches[16:]]
    for blk in blocks:
        assert all(b == sorted(b) for b in blk)  # each batch holds passages of neighbouring lengths
        full = sorted((b for b in blk if len(b) == 4), key=min)
        middle_on = full[len(full) // 2:] + full[: len(full) // 2]
        assert blk == middle_on + [b for b in blk if len(b) < 4]  # from the middle batch on
    assert min(blocks[2][-1]) > max(blocks[2][0])
    assert set(i for b in blocks[0] for i in b) != set(range(32))  # one block's budget did not take the shortest
    assert generation_batches(range(70), passages, 4) == batches  # seeded


def test_generation_estimates_after_one_batch_then_again_over_the_first_block(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    gen = load_generator(str(save_tiny_generator(tmp_path / "gen")), torch.device("cpu"),
                         SamplingSettings(max_new_tokens=3))
    passages = [f"{PASSAGES[i % 3]} {'and more ' * i}" for i in range(20)]
    with caplog.at_level(logging.INFO, logger="genret.indexing.querygen"):
        candidate_queries(gen.name, lambda: gen, QueryCache(tmp_path / "q.jsonl"), passages, 1, batch_size=2,
                          progress=False)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("query generation:")]
    assert len(lines) == 2, lines  # 10 batches of 2: after the first, then after a block of 8
    assert lines[0].startswith("query generation: 20 documents, about ")
    assert lines[1].startswith("query generation: 16 of 20 documents done, about ")


def test_an_estimate_says_what_the_rest_of_the_budget_reaches() -> None:
    budget = GenerationBudget(seconds=60.0, spent=30.0)
    assert generation_estimate(4, 400, 0.5, GenerationBudget(), first=True) == (
        "query generation: 400 documents, about 3 minutes at this rate (cached as it goes)")
    later = generation_estimate(100, 400, 0.5, budget, first=False)
    assert later.startswith("query generation: 100 of 400 documents done, about 2 minutes left at this rate")
    assert "the time budget gives it 1.0 minutes, about 160 documents in this build" in later  # 100 + 30 s / 0.5
    assert "budget" not in generation_estimate(100, 120, 0.5, budget, first=False)  # 10 s left of 30: it fits


def test_cache_ignores_a_line_cut_by_a_crash(tmp_path: Path) -> None:
    f = tmp_path / "q.jsonl"
    cache = QueryCache(f)
    cache.put_many([(QueryCache.key("g", "a"), ["x"]), (QueryCache.key("g", "b"), ["y"])])
    f.write_text(f.read_text() + '{"key": "abc", "quer')
    reread = QueryCache(f)
    assert len(reread) == 2 and reread.get(QueryCache.key("g", "b")) == ["y"]


def test_minilm_ranker_keeps_the_relevant_candidates() -> None:
    ranker = BiEncoderRanker(torch.device("cpu"))
    cands = [["recipes for cooking pasta", "lift of a wing in a propeller slipstream", "stock market news",
              "wing lift increase slipstream", "lift of a wing in a propeller slipstream"]]
    kept = select_queries(ranker, PASSAGES[:1], cands, keep=2)
    assert sorted(kept[0]) == ["lift of a wing in a propeller slipstream", "wing lift increase slipstream"]


def test_minilm_scores_across_passages_equal_each_passage_alone() -> None:
    ranker = BiEncoderRanker(torch.device("cpu"))
    cands = [["wing lift", "stock market news"], [], ["hypersonic cone heating", "flat plate", "pasta"]]
    scores = ranker.score(PASSAGES, cands)
    assert [len(s) for s in scores] == [2, 0, 3]
    for passage, qs, got in zip(PASSAGES, cands, scores, strict=True):
        if qs:
            vecs = ranker.encoder.encode([passage, *qs])
            np.testing.assert_allclose(got, vecs[1:] @ vecs[0], atol=1e-5)


def test_cross_encoder_scores_every_pair_in_batches(tmp_path: Path) -> None:
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from genret.data.embed import minilm_path

    tok = AutoTokenizer.from_pretrained(str(minilm_path()))
    torch.manual_seed(0)
    BertForSequenceClassification(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1,
                                             num_attention_heads=2, intermediate_size=64, num_labels=1)
                                  ).save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    ranker = CrossEncoderRanker(tmp_path, torch.device("cpu"), batch_size=2)  # batches span passages
    cands = [["wing lift", "stock market news", "slipstream"], ["flat plate"], []]
    scores = ranker.score(PASSAGES, cands)
    assert [len(s) for s in scores] == [3, 1, 0]
    for passage, qs, got in zip(PASSAGES, cands, scores, strict=True):
        for q, value in zip(qs, got, strict=True):
            with torch.inference_mode():
                alone = ranker.model(**ranker.tokenizer(q, passage, return_tensors="pt")).logits[0, 0].item()
            assert value == pytest.approx(alone, abs=1e-5)
    kept = select_queries(ranker, PASSAGES, cands, keep=1)
    assert kept[0] == [cands[0][int(np.argmax(scores[0]))]] and kept[1] == ["flat plate"] and kept[2] == []


def test_the_instruction_reaches_the_prompt_and_keys_the_cache(tmp_path: Path) -> None:
    """A chat-template generator is asked what ``instruction`` says; a changed instruction is another cache
    key, while the default one keys as before it could be changed."""
    path = save_tiny_generator(tmp_path / "causal", "causal")
    claim = "Write a one-sentence scientific claim that this passage supports."
    gen = load_generator(str(path), torch.device("cpu"), SamplingSettings(max_new_tokens=6, instruction=claim))
    gen.tokenizer.chat_template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    prompt = gen.prompt(PASSAGES[0])
    assert claim in prompt and PASSAGES[0] in prompt
    assert "instruction" not in SamplingSettings().tag() and "seed=0" in SamplingSettings().tag()
    assert generator_id(str(path), SamplingSettings(instruction=claim)) != generator_id(str(path), SamplingSettings())
    assert gen.name == generator_id(str(path), SamplingSettings(max_new_tokens=6, instruction=claim))

"""BM25 that changes in place scores as a fresh bm25s index of the texts it holds, whatever the writes;
an index built in a worker process is the one the calling thread would build; a tenant's work never takes
every worker."""

from __future__ import annotations

import pickle
import random
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from genret.data.beir import demo_corpus_path, load_corpus
from genret.data.lexical import Bm25
from genret.data.writable_bm25 import WritableBm25, tokenized
from genret.serving.lexical import _BUILDERS, _Builders

QUERIES = ["supersonic flow over wings", "heat transfer in laminar boundary layers", "flow flow of the",
           "boundary-layer transition, at mach 3", "the of and", "zyxwvut"]


@pytest.fixture(scope="module")
def texts() -> dict[str, str]:
    return {d.doc_id: f"{d.title} {d.text}" for d in load_corpus(demo_corpus_path())[:600]}


def assert_scores_as_fresh(index: WritableBm25, held: dict[str, str]) -> None:
    """Every query's every positive score is the one bm25s gives over ``held``; the best 10 are the first
    10 of those scores."""
    assert sorted(index.keys()) == sorted(held) and index.size == len(held)
    keys = list(held)
    reference = Bm25([held[k] for k in keys]).scores(QUERIES) if held else np.zeros((len(QUERIES), 0))
    for q, row in zip(QUERIES, reference, strict=True):
        got = dict(index.top(q, len(held) + 1))
        want = {keys[i]: float(row[i]) for i in np.flatnonzero(row > 0)}
        assert got.keys() == want.keys(), q
        np.testing.assert_allclose([got[k] for k in want], list(want.values()), rtol=2e-6)
        best = [s for _, s in index.top(q, 10)]
        np.testing.assert_allclose(best, sorted(want.values(), reverse=True)[:10], rtol=2e-6)
        assert best == sorted(best, reverse=True)


@pytest.mark.parametrize("seed", [0, 1])
def test_every_write_leaves_the_scores_of_a_fresh_index(texts: dict[str, str], seed: int) -> None:
    rnd = random.Random(seed)
    ids = list(texts)
    held = {k: texts[k] for k in ids[:300]}
    index = WritableBm25(list(held.items()))
    assert_scores_as_fresh(index, held)
    for step in range(120):
        # new keys, replaced texts (another document's words under a held key) and removals, mixed
        written = [(k, texts[rnd.choice(ids)] if rnd.random() < 0.5 else texts[k])
                   for k in rnd.sample(ids, rnd.randint(0, 6))]
        removed = [k for k in rnd.sample(ids, rnd.randint(0, 9)) if k not in dict(written)]
        index.write(written, removed)
        for k in removed:
            held.pop(k, None)
        held.update(written)
        if step % 15 == 0:
            assert_scores_as_fresh(index, held)
    assert_scores_as_fresh(index, held)
    # Removing most of them merges the segments into one and forgets the words no text holds any more.
    words_before = len(index._now.vocab)
    gone = list(held)[:-4]
    index.write([], gone)
    for k in gone:
        del held[k]
    assert_scores_as_fresh(index, held)
    assert len(index._now.segments) == 1 and len(index._now.vocab) < words_before / 4


def test_the_segments_stay_few_and_each_write_indexes_only_its_texts(texts: dict[str, str]) -> None:
    ids = list(texts)
    index = WritableBm25([(k, texts[k]) for k in ids[:512]])
    first = index._now.segments[0]
    for i in range(200):
        index.write([(f"new-{i}", texts[ids[i]])])
        sizes = [s.size for s in index._now.segments]
        assert len(sizes) <= 10 and sizes == sorted(sizes, reverse=True)
    assert index._now.segments[0] is first  # the first 512 texts were never indexed again
    assert index.size == 712


def test_edge_cases_of_writes_and_searches(texts: dict[str, str]) -> None:
    empty = WritableBm25([])
    assert empty.size == 0 and empty.top("flow", 5) == [] and empty.keys() == []
    empty.write([("a", "supersonic flow"), ("b", "the of and")])  # stop words only: held, never found
    assert_scores_as_fresh(empty, {"a": "supersonic flow", "b": "the of and"})
    index = WritableBm25([("a", "wing flow"), ("b", "heat flow")])
    index.write([("c", "flow"), ("c", "wing wing")], ["no-such-key"])  # a key written twice: the last text wins
    assert_scores_as_fresh(index, {"a": "wing flow", "b": "heat flow", "c": "wing wing"})
    assert index.top("wing", 0) == [] and index.top("", 3) == []
    assert [k for k, _ in index.top("wing flow", 3, within=lambda keys: [k for k in keys if k != "c"])] == ["a", "b"]
    index.write([], ["a", "b", "c"])
    assert index.size == 0 and index.top("wing", 3) == []
    index.write([("d", "wing")])
    assert index.top("wing", 3) == [("d", pytest.approx(np.log(1 + 0.5 / 1.5) / (0.9 + 1)))]  # idf / (k1 + tf)


def test_an_index_pickles_and_an_index_built_in_a_worker_process_is_the_one_built_here(
        texts: dict[str, str]) -> None:
    pairs = list(texts.items())[:300]
    here, there = WritableBm25(pairs), _BUILDERS.run(WritableBm25, pairs, 2, "t")
    for q in QUERIES:
        assert here.top(q, 20) == there.top(q, 20) == pickle.loads(pickle.dumps(here)).top(q, 20)
    written = [("x", "supersonic supersonic flow"), *((f"{k}-again", t) for k, t in list(texts.items())[300:400])]
    there.write(_BUILDERS.run(tokenized, written, 2, "t"), [pairs[0][0]])  # tokenized in a worker
    here.write(written, [pairs[0][0]])
    for q in QUERIES:
        assert here.top(q, 20) == there.top(q, 20)


def test_a_tenants_work_takes_one_worker_so_another_tenants_build_does_not_wait_behind_it() -> None:
    """Tenant a's build and large write each take 1.5 s of a worker; b's work, sent while both of a's are
    in, starts in the other worker at once instead of waiting behind them for both workers."""
    builders = _Builders()
    try:
        with ThreadPoolExecutor(3) as threads:
            list(threads.map(lambda tenant: builders.run(time.sleep, 0.5, 2, tenant), ["x", "y"]))  # both workers up
            first = threads.submit(builders.run, time.sleep, 1.5, 2, "a")
            time.sleep(0.1)
            second = threads.submit(builders.run, time.sleep, 1.5, 2, "a")
            time.sleep(0.2)
            start = time.monotonic()
            builders.run(time.sleep, 0.0, 2, "b")
            b_waited = time.monotonic() - start
            assert builders.lanes() == 1  # a's, its second piece waiting in it
            first.result()
            a_first_done = time.monotonic()
            second.result()
            a_second_took = time.monotonic() - a_first_done
        assert b_waited < 0.75, b_waited  # a's two in both workers would hold it for about 1.2 s
        assert a_second_took > 1.2, a_second_took  # a's second piece ran after its first, not beside it
        assert builders.lanes() == 0  # nothing is kept about a tenant with no work
    finally:
        builders.close()

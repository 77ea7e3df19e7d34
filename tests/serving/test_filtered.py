"""A namespace restricted to a filter's points: exactly their docids, the tenant's normaliser, any parts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from genret.decoding.beam import constrained_beam_search
from genret.decoding.model import HFSeq2SeqBackend
from genret.docids import AtomicCodec, SemanticCodec
from genret.errors import InvalidArgument
from genret.indexing.models import build_tiny_model
from genret.serving import namespaces
from genret.serving.filtered import restrict
from genret.serving.namespaces import build_namespaces
from genret.store import MAX_FILTER_IDS, parse_filter

CODEC = SemanticCodec(4, 3)
ALL = [f"{a}-{b}-{c}" for a in range(4) for b in range(4) for c in range(4)]
MODEL, TOKENIZER, SPEC = build_tiny_model(CODEC.vocab_size, seed=5)
BACKEND = HFSeq2SeqBackend(MODEL, TOKENIZER, SPEC, torch.device("cpu"))


def _decoded(served, ns, beams: int) -> dict[str, float]:  # type: ignore[no-untyped-def]
    res = constrained_beam_search(BACKEND, BACKEND.encode(["a query"]), [served.trie], beams)
    found = {}
    for leaf, score in zip(res.leaves[0].tolist(), res.scores[0].tolist(), strict=True):
        if leaf >= 0 and np.isfinite(score):
            part, node = served.locate(np.asarray([leaf]))
            p = ns.parts[int(part[0])]
            found[p.point_ids[int(p.forest.leaf_rank(node)[0])]] = round(score, 5)
    return found


@settings(max_examples=25, deadline=None)
@given(st.sets(st.integers(0, 39), max_size=40), st.booleans(), st.sampled_from(["rebuild", "count", "auto"]))
def test_the_restricted_trie_holds_exactly_the_matching_docids_scored_as_before(keep: set[int], delta: bool,
                                                                                how: str) -> None:
    base = build_namespaces(CODEC, {"t": [(f"p{i}", ALL[i]) for i in range(30)]})
    ns = base.get("t")
    if delta:  # a tenant with a delta part (and a deleted docid in its base)
        old = namespaces.SMALL
        namespaces.SMALL = 8
        try:
            ns = base.apply(CODEC, "t", [(f"p{i}", ALL[i]) for i in range(30, 40)], ["p3"]).get("t")
        finally:
            namespaces.SMALL = old
    assert ns is not None
    match = {f"p{i}" for i in keep}
    cut = restrict(ns, match, torch.device("cpu"), atomic=False, how=how)
    live = {p for p, _ in ns.entries()}
    if not match & live:
        assert cut.ns is None and cut.served is None
        return
    assert cut.ns is not None and cut.served is not None
    assert {p for p, _ in cut.ns.entries()} == match & live
    everything = _decoded(restrict(ns, live, torch.device("cpu"), atomic=False).served, ns, 64)
    assert _decoded(cut.served, cut.ns, 64) == {p: s for p, s in everything.items() if p in match}


@settings(max_examples=40, deadline=None)
@given(st.sets(st.integers(0, 63), max_size=64))
def test_recounted_live_counts_equal_deleting_every_other_docid(keep: set[int]) -> None:
    ns = build_namespaces(CODEC, {"t": [(f"p{i}", d) for i, d in enumerate(ALL)]}).get("t")
    assert ns is not None
    forest, tokens = ns.base.forest, ns.base.tokens.astype(np.int64)
    ranks = np.asarray(sorted(keep), dtype=np.int64)
    others = np.setdiff1d(np.arange(len(ALL)), ranks)
    assert (forest.counted(ranks).live == forest.without(tokens[others]).live).all()


def test_an_atomic_restriction_keeps_the_tenants_tokens_as_its_normaliser() -> None:
    codec = AtomicCodec(16)
    ns = build_namespaces(codec, {"t": [(f"p{i}", str(i)) for i in range(10)]}).get("t")
    assert ns is not None
    cut = restrict(ns, {"p2", "p5"}, torch.device("cpu"), atomic=True)
    assert cut.served is not None and cut.served.trie.own_tokens is not None
    assert sorted(cut.served.trie.own_tokens.tolist()) == sorted(ns.first_tokens().tolist())


@pytest.mark.parametrize(("raw", "says"), [
    ({"must": [{"key": "n", "rnge": {"gte": 1}}]}, "must[0].rnge"),
    ({"must": [{"key": "n", "range": {"gte": "ten"}}]}, "must[0].range.gte"),
    ({"must": [{"has_id": list(range(MAX_FILTER_IDS + 1))}]}, "has_id"),
    ({"maybe": []}, "maybe"),
])
def test_a_bad_filter_says_where(raw: dict, says: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(InvalidArgument, match=says.replace("[", r"\[").replace("]", r"\]")):
        parse_filter(raw)


def test_one_tenants_many_filters_evict_only_its_own_cached_tries(tmp_path: Path) -> None:
    from genret.config import Config
    from genret.serving import filtered
    from genret.store import QdrantStore

    store = QdrantStore(Config(qdrant_path=str(tmp_path / "q"), collection="c"))
    store.ensure_collection(None)
    ns = build_namespaces(CODEC, {t: [(f"p{i}", ALL[i]) for i in range(5)] for t in ("a", "b")})
    cache = filtered.FilteredTries(store, lambda: torch.device("cpu"), atomic=False)
    try:
        cache.get(ns.get("b"), {"must": []}, 0)  # type: ignore[arg-type]
        for i in range(2 * filtered.TENANT_SHARE):
            cache.get(ns.get("a"), {"must": [{"key": "n", "match": {"value": i}}]}, 0)  # type: ignore[arg-type]
    finally:
        store.close()
    assert cache.cached() == {"a": filtered.TENANT_SHARE, "b": 1}


def test_other_tenants_filters_never_push_out_a_tenants_cached_tries(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """However many tenants cache their full share, each keeps its own: no bound is shared, so no tenant's
    cached tries make room for another's, and none is kept from caching by the others. Tries older than
    the TTL leave first."""
    from genret.config import Config
    from genret.serving import filtered
    from genret.store import QdrantStore

    store = QdrantStore(Config(qdrant_path=str(tmp_path / "q"), collection="c"))
    store.ensure_collection(None)
    many = [f"t{i}" for i in range(6)]
    ns = build_namespaces(CODEC, {t: [(f"p{i}", ALL[i]) for i in range(5)] for t in ["b", *many]})
    cache = filtered.FilteredTries(store, lambda: torch.device("cpu"), atomic=False)
    flt = lambda i: {"must": [{"key": "n", "match": {"value": i}}]}  # noqa: E731
    try:
        cache.get(ns.get("b"), flt(0), 0)  # type: ignore[arg-type]
        for tenant in many:
            for i in range(filtered.TENANT_SHARE):
                assert cache.get(ns.get(tenant), flt(i), 0).matching == 0  # type: ignore[arg-type]
        assert cache.cached() == {"b": 1, **{t: filtered.TENANT_SHARE for t in many}}
        monkeypatch.setattr(filtered, "CACHE_TTL_S", 0.0)  # everything cached is now out of date
        cache.get(ns.get(many[-1]), flt(0), 0)  # type: ignore[arg-type]
        assert cache.cached() == {many[-1]: 1}
    finally:
        store.close()


def test_a_tenants_cached_tries_hold_at_most_a_few_times_its_own_trie(tmp_path: Path) -> None:
    """A broad filter's trie is the tenant's whole trie recounted: at most ``TENANT_NODES`` of them stay
    cached. A selective filter's is rebuilt over its few documents, and several fit beside them."""
    from genret.config import Config
    from genret.serving import filtered
    from genret.store import QdrantStore

    store = QdrantStore(Config(qdrant_path=str(tmp_path / "q"), collection="c"))
    store.ensure_collection(None)
    docs = [(f"d{i}", f"title {i}", "text") for i in range(len(ALL))]
    try:
        pids = store.upsert_documents("a", docs, None, extras=[({"n": i}, {}) for i in range(len(ALL))])
        ns = build_namespaces(CODEC, {"a": list(zip(pids, ALL, strict=True))}).get("a")
        assert ns is not None
        cache = filtered.FilteredTries(store, lambda: torch.device("cpu"), atomic=False)
        broad = [cache.get(ns, {"must": [{"key": "n", "range": {"gte": k}}]}, 0) for k in range(6)]
        assert all(r.nodes == ns.num_nodes for r in broad)  # recounted, not rebuilt
        assert cache.cached() == {"a": filtered.TENANT_NODES}
        few = [cache.get(ns, {"must": [{"key": "n", "match": {"value": i}}]}, 0) for i in range(3)]
        assert all(r.matching == 1 and 0 < r.nodes < ns.num_nodes // 8 for r in few)
        # the oldest broad trie made room for the first selective one, and the other two fit beside
        assert cache.cached() == {"a": filtered.TENANT_NODES - 1 + len(few)}
    finally:
        store.close()

"""Tenant namespaces: a write touches only its tenant; a big tenant's writes go to a delta trie and to
counts along deleted paths, and searching the parts finds exactly what searching one rebuilt trie finds."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from genret.decoding.beam import constrained_beam_search
from genret.decoding.model import EncodedQueries, HFSeq2SeqBackend
from genret.docids import SemanticCodec
from genret.indexing.models import build_tiny_model
from genret.serving import namespaces
from genret.serving.engine import packed, served_trie
from genret.serving.namespaces import Namespaces, build_namespaces

CODEC = SemanticCodec(4, 3)
ALL = [f"{a}-{b}-{c}" for a in range(4) for b in range(4) for c in range(4)]  # 64 docids
MODEL, TOKENIZER, SPEC = build_tiny_model(CODEC.vocab_size, seed=3)
BACKEND = HFSeq2SeqBackend(MODEL, TOKENIZER, SPEC, torch.device("cpu"))


def test_a_write_rebuilds_only_its_tenant() -> None:
    ns = build_namespaces(CODEC, {t: [(f"{t}{i}", ALL[i]) for i in range(10)] for t in ("a", "b", "c")})
    after = ns.apply(CODEC, "a", [("a-new", ALL[20])], ["a3"])
    assert after.get("b") is ns.get("b") and after.get("c") is ns.get("c")  # shared, not copied
    assert after.counts == {"a": 10, "b": 10, "c": 10} and "a3" not in after.entries_set("a")
    assert after.apply(CODEC, "a", [], [p for p, _ in after.entries("a")]).tenants == ("b", "c")


def search(ns: Namespaces, tenant: str, beams: int) -> list[tuple[str, float]]:
    """Every (point id, score) an exhaustive vocab-scored search of the tenant's served trie returns."""
    mine = ns.get(tenant)
    assert mine is not None
    served = served_trie(mine, torch.device("cpu"), atomic=False)
    res = constrained_beam_search(BACKEND, BACKEND.encode(["a query"]), [served.trie], beams)
    leaves = res.leaves[0].numpy()
    keep = leaves >= 0
    part, node = served.locate(leaves[keep])
    out = []
    for k, n, s in zip(part.tolist(), node.tolist(), res.scores[0][torch.from_numpy(keep)].tolist(), strict=True):
        p = mine.parts[k]
        out.append((p.point_ids[int(p.forest.leaf_rank(np.asarray([n]))[0])], round(s, 4)))
    return sorted(out)


@settings(max_examples=25, deadline=None)
@given(ops=st.lists(st.tuples(st.booleans(), st.integers(0, 63)), min_size=1, max_size=30))
def test_delta_tries_hold_exactly_the_live_docids(ops: list[tuple[bool, int]]) -> None:
    """With every tenant of more than 4 docids treated as big, any sequence of upserts and deletes leaves
    the same live docids as a rebuild from scratch, and an exhaustive search over the base and delta tries
    returns each of them once with the score a single rebuilt trie gives it."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(namespaces, "SMALL", 4)
        mp.setattr(namespaces, "COMPACT_SHARE", 0.3)
        live = {f"p{i}": ALL[i] for i in range(0, 40, 2)}
        ns = build_namespaces(CODEC, {"t": list(live.items())})
        for upsert, i in ops:
            pid = f"p{i}"
            if upsert and pid not in live and ALL[i] not in live.values():
                ns = ns.apply(CODEC, "t", [(pid, ALL[i])], [])
                live[pid] = ALL[i]
            elif not upsert and pid in live and len(live) > 1:
                ns = ns.apply(CODEC, "t", [], [pid])
                del live[pid]
        assert sorted(ns.entries("t")) == sorted(live.items())
        rebuilt = build_namespaces(CODEC, {"t": list(live.items())})
        assert search(ns, "t", 64) == search(rebuilt, "t", 64)
        assert len(search(ns, "t", 64)) == len(live)


def test_small_tries_packed_into_one_forest_decode_as_each_alone() -> None:
    """A batch of three tenants' queries decoded over their tries packed into one forest returns, for
    each query, the same docids (as nodes of its own trie) and scores as decoding it alone."""
    ns = build_namespaces(CODEC, {"a": [(f"a{i}", ALL[i]) for i in range(0, 30)],
                                  "b": [(f"b{i}", ALL[i]) for i in range(20, 64, 2)],
                                  "c": [(f"c{i}", ALL[i]) for i in range(5, 12)]})
    order = ["a", "b", "c", "b"]
    served = [served_trie(ns.get(t), torch.device("cpu"), atomic=False) for t in order]  # type: ignore[arg-type]
    tries, unpack = packed(served, torch.device("cpu"))
    assert len({id(t.forest) for t in tries}) == 1  # one forest, one kernel call per step
    enc = BACKEND.encode(["q one", "q two", "q three", "q four"])
    together = constrained_beam_search(BACKEND, enc, tries, 6)
    leaves = unpack(together.leaves.numpy())
    for q, s in enumerate(served):
        alone = constrained_beam_search(BACKEND, EncodedQueries(enc.hidden[q : q + 1], enc.mask[q : q + 1]),
                                        [s.trie], 6)
        assert leaves[q].tolist() == alone.leaves[0].tolist()
        np.testing.assert_allclose(together.scores[q].numpy(), alone.scores[0].numpy(), rtol=1e-5, atol=1e-5)

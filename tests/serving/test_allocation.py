"""Docid placement for new documents and the atomic docid pool."""

from __future__ import annotations

import numpy as np
import pytest

from genret.data.index_dir import TrainedDocids
from genret.docids import AtomicCodec, NaiveCodec, SemanticCodec
from genret.docids.placement import TenantDocids, docid_for
from genret.errors import FailedPrecondition
from genret.serving.allocation import AtomicPool


def unit(*xs: float) -> np.ndarray:
    v = np.asarray(xs, dtype=np.float32)
    return v / np.linalg.norm(v)


def test_new_document_lands_in_its_nearest_cluster_at_a_free_code() -> None:
    state = TenantDocids(SemanticCodec(3, 3))
    for d, v in [("0-0", unit(1, 0)), ("0-1", unit(1, 0.1)), ("1-0", unit(0, 1)), ("1-2", unit(0.1, 1))]:
        state.add(d, v)
    assert state.allocate(unit(0.05, 1)) == "1-1"  # the free code of the nearest cluster
    assert state.allocate(unit(1, 0.05)) == "0-2"


def test_full_cluster_goes_one_level_deeper_under_the_nearest_document() -> None:
    state = TenantDocids(SemanticCodec(2, 3))
    for d, v in [("0-0", unit(1, 0)), ("0-1", unit(1, 1)), ("1-0", unit(-1, 0)), ("1-1", unit(-1, -1))]:
        state.add(d, v)
    got = state.allocate(unit(1, 0.9))
    assert got == "0-1-0"  # cluster 0 is full: below its nearest member
    state.add(got, unit(1, 0.9))
    state.remove("1-1", unit(-1, -1))
    assert state.allocate(unit(-1, -0.5)) == "1-1"  # a freed code is reused


def test_full_space_and_other_schemes() -> None:
    state = TenantDocids(SemanticCodec(2, 1))
    state.add("0", None)
    state.add("1", None)
    with pytest.raises(FailedPrecondition, match="full"):
        state.allocate(None)
    with pytest.raises(ValueError, match="not placed"):
        TenantDocids(AtomicCodec(3)).allocate(None)
    naive_codec = NaiveCodec("abc", 3)
    naive = TenantDocids(naive_codec)
    assert docid_for(naive_codec, naive, "cab", None) == "cab"
    with pytest.raises(FailedPrecondition):
        docid_for(naive_codec, naive, "xyz", None)


def test_atomic_pool_hands_out_each_number_once_and_reuses_freed_ones_when_no_search_can_see_them() -> None:
    pool = AtomicPool(5, held=[0, 2])
    assert pool.take(2, oldest=0) == [1, 3] and len(pool) == 1
    with pytest.raises(FailedPrecondition, match="1 free"):
        pool.take(2, oldest=0)  # all or nothing
    assert len(pool) == 1
    pool.give_back([3])  # a refused write's numbers: free at once
    assert pool.take(2, oldest=0) == [3, 4]
    pool.retire([0, 2], epoch=7)  # deleted in snapshot 7
    with pytest.raises(FailedPrecondition):
        pool.take(1, oldest=6)  # a search still reads snapshot 6, which holds them
    assert pool.take(2, oldest=7) == [0, 2]


def test_tenant_counts_its_new_docids() -> None:
    state = TenantDocids(SemanticCodec(3, 2))
    state.add("0", None)
    state.add("1", None, new=True)
    state.add("2-0", None, new=True)
    assert state.new == {"1", "2-0"}
    state.remove("1", None)
    state.remove("0", None)
    assert state.new == {"2-0"}


def test_empty_tenant_fills_codes_in_order_then_goes_deeper() -> None:
    state = TenantDocids(SemanticCodec(2, 2))
    got = []
    for _ in range(6):
        d = state.allocate(None)
        state.add(d, None)
        got.append(d)
    assert got == ["0", "1", "0-0", "0-1", "1-0", "1-1"]
    with pytest.raises(FailedPrecondition):
        state.allocate(None)


def test_trained_docids_know_which_document_each_docid_was_trained_for() -> None:
    trained = TrainedDocids([("p1", "0"), ("p2", "1"), ("p1", "0")])
    assert len(trained) == 2 and ("p1", "0") in trained and ("p2", "1") in trained
    assert ("p3", "0") not in trained  # docid 0 reused for another document: new, not trained
    assert ("p1", "1") not in trained and ("x", "y") not in TrainedDocids([])

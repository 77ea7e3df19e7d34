from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from genret.decoding.trie import build_forest, join_forests
from genret.docids import EOS, PAD


def rows(seqs: list[list[int]]) -> np.ndarray:
    width = max(len(s) for s in seqs) + 1
    out = np.full((len(seqs), width), PAD, dtype=np.int64)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = s
        out[i, len(s)] = EOS
    return out


def dict_trie(tenant_of: list[int], seqs: list[list[int]]) -> dict[tuple[int, tuple[int, ...]], set[int]]:
    """Brute-force: children tokens of every (tenant, prefix)."""
    out: dict[tuple[int, tuple[int, ...]], set[int]] = {}
    for t, s in zip(tenant_of, seqs, strict=True):
        full = [*s, EOS]
        for d in range(len(full)):
            out.setdefault((t, tuple(full[:d])), set()).add(full[d])
    return out


def test_small_forest_structure() -> None:
    seqs = [[2, 3], [2, 4], [5], [2, 3]]
    tenants = np.array([0, 0, 0, 1])
    f, order = build_forest(["a", "b"], tenants, rows(seqs))
    assert f.tenants == ("a", "b")
    tok, _ = f.children(0)
    assert tok.tolist() == [2, 5]
    tok, _ = f.children(1)
    assert tok.tolist() == [2]
    assert f.live[0] == 3 and f.live[1] == 1
    for i, (t, s) in enumerate(zip(["a", "a", "a", "b"], seqs, strict=True)):
        leaf = f.walk(t, s)
        assert leaf >= 0 and order[f.leaf_rank(np.array([leaf]))[0]] == i
    assert f.walk("a", [2]) == -1
    assert f.walk("b", [2, 4]) == -1  # a's docid is not in b's namespace
    assert f.max_depth == 3


def test_duplicate_docids_rejected() -> None:
    with pytest.raises(ValueError, match="unique"):
        build_forest(["a"], np.array([0, 0]), rows([[2, 3], [2, 3]]))


def test_dead_rows_have_no_live_path() -> None:
    f, _ = build_forest(["a"], np.array([0, 0]), rows([[2, 3], [2, 4]]), alive=np.array([True, False]))
    assert f.walk("a", [2, 3]) >= 0
    assert f.walk("a", [2, 4]) == -1
    tok, _ = f.children(f.num_roots)  # edge 0 leads to node num_roots
    assert tok.tolist() == [3]


def test_empty_tenant_has_root_only() -> None:
    f, _ = build_forest(["a", "empty"], np.array([0]), rows([[2]]))
    assert f.children(1)[0].size == 0 and f.live[1] == 0 and f.nodes_in("empty") == 1


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 2), st.lists(st.integers(2, 6), min_size=1, max_size=4)),
                min_size=1, max_size=40, unique_by=lambda x: (x[0], tuple(x[1]))))
def test_forest_matches_dict_trie(items: list[tuple[int, list[int]]]) -> None:
    tenant_of = [t for t, _ in items]
    seqs = [s for _, s in items]
    f, order = build_forest(["t0", "t1", "t2"], np.array(tenant_of), rows(seqs))
    ref = dict_trie(tenant_of, seqs)
    # Walk every prefix of the reference; children must match exactly and be sorted.
    for (t, prefix), kids in ref.items():
        node = t
        for tok in prefix:
            toks, nodes = f.children(node)
            node = int(nodes[list(toks).index(tok)])
        toks, _ = f.children(node)
        assert toks.tolist() == sorted(kids)
    for i, (t, s) in enumerate(items):
        assert order[f.leaf_rank(np.array([f.walk(f"t{t}", s)]))[0]] == i
    assert int(f.live[:3].sum()) == len(items)
    assert f.row_ptr[-1] == len(f.child_token) == f.num_nodes - 3
    assert f.num_leaves == len(items) and sorted(order.tolist()) == list(range(len(items)))
    assert (f.leaf_rank(np.arange(3)) == -1).all()  # roots are not leaves
    assert sum(f.nodes_in(t) for t in f.tenants) == f.num_nodes


def random_rows(rng: np.random.Generator, n: int, depth: int, branching: int) -> np.ndarray:
    """Up to ``n`` distinct docid rows of 1..depth tokens."""
    seqs = {tuple(rng.integers(2, 2 + branching, size=int(rng.integers(1, depth + 1))).tolist()) for _ in range(n)}
    return rows([list(s) for s in seqs])


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), parts=st.integers(1, 3))
def test_joined_forests_walk_like_their_parts(seed: int, parts: int) -> None:
    """Every docid of every part is reached from that part's root in the joined forest, along nodes that
    locate back to the part's own nodes with the same live counts, and nothing else is there."""
    rng = np.random.default_rng(seed)
    datas = [random_rows(rng, int(rng.integers(1, 25)), int(rng.integers(1, 4)), 3) for _ in range(parts)]
    forests = [build_forest(["t"], np.zeros(len(d), dtype=np.int64), d)[0] for d in datas]
    joined = join_forests(forests)
    j = joined.arrays
    assert j.num_roots == parts and j.num_nodes == sum(f.num_nodes for f in forests)
    assert (np.diff(j.row_ptr) >= 0).all() and j.row_ptr[-1] == j.num_nodes - parts
    for k, (f, data) in enumerate(zip(forests, datas, strict=True)):
        for row in data:
            there, here = j.path(k, row.tolist()), f.path(0, row.tolist())
            assert there and len(there) == len(here)
            part, local = joined.locate(np.asarray(there))
            assert (part == k).all() and local.tolist() == here
            assert (j.live[there] == f.live[here]).all()
            for node, mine in zip(there, here, strict=True):  # same children, in the same order
                assert j.children(node)[0].tolist() == f.children(mine)[0].tolist()


def test_deleting_counts_a_docid_out_of_its_path_only() -> None:
    data = rows([[2, 3], [2, 4], [5]])
    f, order = build_forest(["t"], np.zeros(3, dtype=np.int64), data)
    g = f.without(data[[0]])
    assert f.walk("t", [2, 3]) >= 0 and g.walk("t", [2, 3]) == -1  # the old forest is untouched
    assert g.walk("t", [2, 4]) >= 0 and g.walk("t", [5]) >= 0
    assert g.live[0] == 2 and g.children(0)[0].tolist() == [2, 5]
    with pytest.raises(ValueError, match="live docid"):
        g.without(data[[0]])

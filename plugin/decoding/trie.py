"""The trie forest: every tenant's docids as one packed CSR structure, built vectorised.

Nodes are numbered depth-major: the tenant roots first (node ``t`` is tenant ``t``'s root), then all
depth-1 nodes, and so on; inside a depth, nodes are in lexicographic order of their prefixes. So the
children of a node are one contiguous run of edges, sorted by token, and edge ``e`` leads to node
``num_roots + e`` (child node ids are implicit, nothing stores them):

    edges of node n:   row_ptr[n] .. row_ptr[n+1]                 int32
    edge e:            child_token[e] (a docid token)             int16 when the vocabulary fits, else int32
                       leads to node num_roots + e
    live[n]:           live docids below n (0: the subtree is deleted, never decoded)    int32

A leaf is the node reached by EOS. Leaves are numbered by rank (their order by node id); a bitmap with
per-word counts maps a leaf node to its rank in O(1), and ``build_forest`` returns which input row each
rank stands for. The device holds only ``row_ptr``, ``child_token`` and ``live``.

A forest is immutable. Changes build a new forest, which readers pick up by swapping one reference:
a search in flight sees the old forest or the new one, never a mix.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch

from genret.docids import EOS, PAD


@dataclass(frozen=True)
class TrieForest:
    tenants: tuple[str, ...]
    row_ptr: np.ndarray  # (nodes + 1,) int32
    child_token: np.ndarray  # (edges,) int16 | int32, edges = nodes - num_roots
    live: np.ndarray  # (nodes,) int32
    leaf_words: np.ndarray  # (ceil(nodes / 64),) uint64 bitmap of leaves
    leaf_base: np.ndarray  # (words,) int64 leaves before each word
    max_depth: int  # tokens on the longest path, EOS included
    max_children: int

    @property
    def num_roots(self) -> int:
        return len(self.tenants)

    @property
    def num_nodes(self) -> int:
        return int(self.row_ptr.shape[0] - 1)

    @property
    def num_leaves(self) -> int:
        return int(self.leaf_base[-1] + np.bitwise_count(self.leaf_words[-1])) if len(self.leaf_words) else 0

    def root_of(self, tenant: str) -> int:
        return self.tenants.index(tenant)

    def children(self, node: int) -> tuple[np.ndarray, np.ndarray]:
        """(tokens, nodes) of the live children of ``node``."""
        lo, hi = int(self.row_ptr[node]), int(self.row_ptr[node + 1])
        nodes = np.arange(lo, hi, dtype=np.int64) + self.num_roots
        keep = self.live[nodes] > 0
        return self.child_token[lo:hi][keep].astype(np.int64), nodes[keep]

    def walk(self, tenant: str, tokens: Sequence[int]) -> int:
        """The leaf reached by ``tokens`` + EOS from the tenant's root, or -1 if the docid is absent."""
        path = self.path(self.root_of(tenant), [*tokens, EOS])
        return path[-1] if path and self.live[path[-1]] > 0 else -1

    def path(self, root: int, row: Sequence[int]) -> list[int]:
        """The nodes from ``root`` along a docid row (tokens, EOS, optional PAD), root included; [] if the
        docid is not in the structure (dead or alive)."""
        node, out = root, [root]
        for tok in row:
            if tok == PAD:
                break
            lo, hi = int(self.row_ptr[node]), int(self.row_ptr[node + 1])
            pos = lo + int(np.searchsorted(self.child_token[lo:hi], tok))
            if pos >= hi or self.child_token[pos] != tok:
                return []
            node = pos + self.num_roots
            out.append(node)
        return out

    def without(self, rows: np.ndarray, root: int = 0) -> TrieForest:
        """This forest with the docids of ``rows`` (token rows, each a live docid under ``root``) deleted:
        the structure is shared, only ``live`` is copied and counted down along each docid's path."""
        live = self.live.copy()
        for row in rows:
            path = self.path(root, row.tolist())
            if not path or live[path[-1]] <= 0:
                raise ValueError("only a live docid can be deleted")
            live[path] -= 1
        return replace(self, live=live)

    def leaf_nodes(self) -> np.ndarray:
        """Every leaf node, in leaf-rank order (node order)."""
        bits = np.unpackbits(self.leaf_words.view(np.uint8), bitorder="little")[: self.num_nodes]
        return np.flatnonzero(bits)

    def counted(self, ranks: np.ndarray) -> TrieForest:
        """This forest with only the leaves of ``ranks`` live: each node's ``live`` becomes the number of those
        leaves below it, so every subtree without one is dead to decoding (the structure is shared). Nodes
        are numbered depth-major, so one vectorised pass per depth, deepest first, sums children into parents."""
        live = np.zeros(self.num_nodes, dtype=np.int64)
        live[self.leaf_nodes()[np.asarray(ranks, dtype=np.int64)]] = 1
        levels = [(0, self.num_roots)]
        while levels[-1][1] > levels[-1][0]:
            lo, hi = levels[-1]
            levels.append((int(self.row_ptr[lo]) + self.num_roots, int(self.row_ptr[hi]) + self.num_roots))
        for lo, hi in reversed(levels[1:-1]):
            parents = np.searchsorted(self.row_ptr, np.arange(lo, hi) - self.num_roots, side="right") - 1
            np.add.at(live, parents, live[lo:hi])
        return replace(self, live=live.astype(self.live.dtype))

    def leaf_rank(self, nodes: np.ndarray) -> np.ndarray:
        """Rank of each leaf node (index into the rows ``build_forest`` returned); -1 for other nodes."""
        nodes = np.asarray(nodes, dtype=np.int64)
        ok = (nodes >= 0) & (nodes < self.num_nodes)
        safe = np.where(ok, nodes, 0)
        word, bit = safe >> 6, (safe & 63).astype(np.uint64)
        words = self.leaf_words[word]
        is_leaf = ok & (((words >> bit) & np.uint64(1)) == 1)
        below = words & ((np.uint64(1) << bit) - np.uint64(1))
        rank = self.leaf_base[word] + np.bitwise_count(below).astype(np.int64)
        return np.where(is_leaf, rank, -1)

    def nodes_in(self, tenant: str) -> int:
        """Nodes of one tenant's subtree, root included: each depth's nodes form one contiguous range."""
        lo = hi = self.root_of(tenant)  # nodes lo..hi (inclusive) at the current depth
        count = 1
        while True:
            first, last = int(self.row_ptr[lo]), int(self.row_ptr[hi + 1])  # edges of the range
            if first >= last:
                return count
            count += last - first
            lo, hi = first + self.num_roots, last - 1 + self.num_roots

    def device_nbytes(self) -> int:
        return int(self.row_ptr.nbytes + self.child_token.nbytes + self.live.nbytes)

    def nbytes(self) -> int:
        return self.device_nbytes() + int(self.leaf_words.nbytes + self.leaf_base.nbytes)

    def to_device(self, device: torch.device) -> DeviceForest:
        return DeviceForest(
            row_ptr=torch.from_numpy(self.row_ptr).to(device),
            child_token=torch.from_numpy(self.child_token).to(device),
            live=torch.from_numpy(self.live).to(device),
            num_roots=self.num_roots,
            max_depth=self.max_depth,
            max_children=self.max_children,
        )


@dataclass(frozen=True)
class DeviceForest:
    """The arrays the decoding kernels read, as tensors on the decoding device."""

    row_ptr: torch.Tensor  # (nodes + 1,) int32
    child_token: torch.Tensor  # (edges,) int16 | int32
    live: torch.Tensor  # (nodes,) int32
    num_roots: int
    max_depth: int
    max_children: int


def _lex_order(tenant_of_row: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """Row order by (tenant, tokens...) lexicographically; tokens are packed into as few sort keys as fit."""
    n, width = tokens.shape
    bits = max(1, int(tokens.max()).bit_length()) if n else 1
    per_key = max(1, 63 // bits)
    keys = []
    for lo in range(0, width, per_key):
        key = np.zeros(n, dtype=np.int64)
        for j in range(lo, min(width, lo + per_key)):
            key = (key << bits) | tokens[:, j]
        keys.append(key)
    return np.lexsort([*reversed(keys), tenant_of_row])  # np.lexsort sorts by its last key first


def build_forest(tenants: Sequence[str], tenant_of_row: np.ndarray, tokens: np.ndarray,
                 alive: np.ndarray | None = None) -> tuple[TrieForest, np.ndarray]:
    """Build the forest from EOS-terminated, PAD-padded token rows; return it and the row of each leaf rank.

    tenant_of_row: (n,) index into ``tenants``; tokens: (n, L) with each row ``codes.. EOS PAD..``;
    alive: (n,) bool, dead rows stay in the structure but count as deleted.
    """
    tokens = np.asarray(tokens, dtype=np.int64)
    n, width = tokens.shape if tokens.ndim == 2 else (0, 0)
    num_roots = len(tenants)
    tenant_of_row = np.asarray(tenant_of_row, dtype=np.int64)
    alive = np.ones(n, dtype=bool) if alive is None else np.asarray(alive, dtype=bool)
    if n:
        if not (tokens == EOS).any(axis=1).all():
            raise ValueError("every docid row must end with EOS")
        if ((tenant_of_row < 0) | (tenant_of_row >= num_roots)).any():
            raise ValueError("tenant index out of range")
        if tokens.min() < 0:
            raise ValueError("docid tokens must be non-negative")

    order = _lex_order(tenant_of_row, tokens) if n else np.zeros(0, dtype=np.int64)
    toks, ten, alv = tokens[order], tenant_of_row[order], alive[order]
    valid = toks != PAD  # (n, L): row has a node at depth j+1
    same = np.zeros((n, width + 1), dtype=bool)  # column 0: same tenant as the previous row
    if n > 1:
        same[1:, 0] = ten[1:] == ten[:-1]
        same[1:, 1:] = toks[1:] == toks[:-1]
    prefix_same = np.logical_and.accumulate(same, axis=1)[:, 1:]
    is_new = valid & ~prefix_same  # (n, L) a new node at depth j+1 starts at row i

    node_at = np.full((n, width), -1, dtype=np.int64)  # node id at depth j+1 of row i
    parent_parts, token_parts = [], []
    next_id = num_roots
    for j in range(width):
        starts = is_new[:, j]
        ids = np.cumsum(starts) - 1 + next_id
        node_at[:, j] = np.where(valid[:, j], ids, -1)
        next_id += int(starts.sum())
        rows = np.flatnonzero(starts)
        parent_parts.append(ten[rows] if j == 0 else node_at[rows, j - 1])
        token_parts.append(toks[rows, j])
    num_nodes = next_id
    last = valid.sum(1) - 1
    leaf_node = node_at[np.arange(n), last]
    if n and prefix_same[:, -1].any():  # a row equal to the previous one, tenant included
        raise ValueError("docids are not unique inside their namespace")

    parent = np.concatenate(parent_parts) if parent_parts else np.zeros(0, dtype=np.int64)
    child_token = np.concatenate(token_parts) if token_parts else np.zeros(0, dtype=np.int64)
    counts = np.bincount(parent, minlength=num_nodes)
    row_ptr = np.zeros(num_nodes + 1, dtype=np.int64)
    np.cumsum(counts, out=row_ptr[1:])
    if row_ptr[-1] >= 2**31:
        raise ValueError("trie forest exceeds 2^31 edges")

    on_live_path = valid & alv[:, None]
    live = np.bincount(node_at[on_live_path], minlength=num_nodes)
    live[:num_roots] += np.bincount(ten[alv], minlength=num_roots)

    is_leaf = np.zeros(-(-num_nodes // 64) * 64, dtype=bool)
    is_leaf[leaf_node] = True
    leaf_words = np.packbits(is_leaf, bitorder="little").view(np.uint64)
    per_word = np.bitwise_count(leaf_words).astype(np.int64)
    leaf_base = np.cumsum(per_word) - per_word
    leaf_rows = order[np.argsort(leaf_node, kind="stable")]

    token_dtype = np.int16 if child_token.size == 0 or child_token.max() < 2**15 else np.int32
    forest = TrieForest(
        tenants=tuple(tenants),
        row_ptr=row_ptr.astype(np.int32),
        child_token=child_token.astype(token_dtype),
        live=live.astype(np.int32),
        leaf_words=leaf_words,
        leaf_base=leaf_base,
        max_depth=int(valid.sum(1).max()) if n else 0,
        max_children=int(counts.max()) if num_nodes else 0,
    )
    return forest, leaf_rows


@dataclass(frozen=True)
class JoinedForest:
    """Single-root forests packed into one forest with one root per part (root ``i`` is part ``i``'s),
    so one beam search can start a query at every part's root. ``locate`` maps a joined node back to its
    part and the node it is there."""

    arrays: TrieForest  # row_ptr, child_token, live and the sizes; its leaf bitmap is empty
    seg_start: np.ndarray  # (segments,) first joined node of each (depth, part) run, ascending
    seg_part: np.ndarray  # (segments,) the part of each run
    seg_local: np.ndarray  # (segments,) the part's node at the start of each run

    def locate(self, nodes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(part, node in that part) of each joined node (nodes must be >= 0)."""
        seg = np.searchsorted(self.seg_start, nodes, side="right") - 1
        return self.seg_part[seg], self.seg_local[seg] + (nodes - self.seg_start[seg])


def _levels(forest: TrieForest) -> list[tuple[int, int]]:
    """[lo, hi) node range of each depth of a single-root forest (depth 0 is the root)."""
    out, lo, hi = [], 0, 1
    while lo < hi:
        out.append((lo, hi))
        lo, hi = 1 + int(forest.row_ptr[lo]), 1 + int(forest.row_ptr[hi])
    return out


def join_forests(forests: Sequence[TrieForest]) -> JoinedForest:
    """Pack single-root forests into one: nodes depth-major, and inside a depth part by part, so every
    node's children stay one run of edges and edge ``e`` still leads to node ``k + e`` (k = parts). Cost:
    one copy of the arrays."""
    if any(f.num_roots != 1 for f in forests):
        raise ValueError("only single-root forests can be joined")
    k = len(forests)
    levels = [_levels(f) for f in forests]
    depth = max(len(lv) for lv in levels)
    size = [[(lv[d][1] - lv[d][0]) if d < len(lv) else 0 for d in range(depth)] for lv in levels]
    level_start = np.cumsum([0] + [sum(size[i][d] for i in range(k)) for d in range(depth)])
    rp_parts, tok_parts, live_parts, starts, parts, locals_ = [], [], [], [], [], []
    for d in range(depth):
        before = 0
        for i, f in enumerate(forests):
            if d >= len(levels[i]):
                continue
            lo, hi = levels[i][d]
            start = int(level_start[d]) + before  # joined id of this run's first node
            starts.append(start)
            parts.append(i)
            locals_.append(lo)
            before += hi - lo
            # children of these nodes: the part's next depth, placed after earlier parts' runs there
            child_run = (int(level_start[d + 1]) + sum(size[j][d + 1] for j in range(i)) if d + 1 < depth
                         else int(level_start[depth]))
            shift = child_run - (1 + int(f.row_ptr[lo])) + 1 - k  # local edge -> joined edge
            rp_parts.append(f.row_ptr[lo:hi].astype(np.int64) + shift)
            live_parts.append(f.live[lo:hi])
            if d > 0:
                tok_parts.append(f.child_token[lo - 1 : hi - 1])
    num_nodes = int(level_start[-1])
    row_ptr = np.concatenate([*rp_parts, [num_nodes - k]]).astype(np.int32)
    token_dtype = np.result_type(*(f.child_token.dtype for f in forests))
    arrays = TrieForest(
        tenants=tuple(str(i) for i in range(k)),
        row_ptr=row_ptr,
        child_token=np.concatenate(tok_parts).astype(token_dtype) if tok_parts else np.zeros(0, token_dtype),
        live=np.concatenate(live_parts).astype(np.int32),
        leaf_words=np.zeros(0, dtype=np.uint64),
        leaf_base=np.zeros(0, dtype=np.int64),
        max_depth=max(f.max_depth for f in forests),
        max_children=max(f.max_children for f in forests),
    )
    return JoinedForest(arrays, np.asarray(starts, np.int64), np.asarray(parts, np.int64),
                        np.asarray(locals_, np.int64))

"""The trie forest: every tenant's docids as one packed CSR structure, built vectorised.

Nodes are numbered depth-major: the tenant roots first (node ``t`` is tenant ``t``'s root), then all
depth-1 nodes, and so on; inside a depth, nodes are in lexicographic order of their prefixes. So the
children of a node are one contiguous run of edges, sorted by token:

    edges of node n:   row_ptr[n] .. row_ptr[n+1]
    edge e:            child_token[e] (a docid token), child_node[e] (the node it leads to)
    live[n]:           live docids below n (0 means the subtree is deleted: never decoded)
    leaf_value[n]:     for a leaf (the node after EOS) the row of its docid in ``values``; else -1

A forest is immutable. Changes build a new forest, which readers pick up by swapping one reference:
a search in flight sees the old forest or the new one, never a mix.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from genret.docids import EOS, PAD


@dataclass(frozen=True)
class TrieForest:
    tenants: tuple[str, ...]
    row_ptr: np.ndarray  # (nodes + 1,) int64
    child_token: np.ndarray  # (edges,) int64
    child_node: np.ndarray  # (edges,) int64
    live: np.ndarray  # (nodes,) int64
    leaf_value: np.ndarray  # (nodes,) int64, -1 for inner nodes
    node_depth: np.ndarray  # (nodes,) int64
    max_depth: int  # tokens on the longest path, EOS included

    @property
    def num_nodes(self) -> int:
        return int(self.row_ptr.shape[0] - 1)

    def root_of(self, tenant: str) -> int:
        return self.tenants.index(tenant)

    def children(self, node: int) -> tuple[np.ndarray, np.ndarray]:
        """(tokens, nodes) of the live children of ``node``."""
        lo, hi = int(self.row_ptr[node]), int(self.row_ptr[node + 1])
        keep = self.live[self.child_node[lo:hi]] > 0
        return self.child_token[lo:hi][keep], self.child_node[lo:hi][keep]

    def walk(self, tenant: str, tokens: Sequence[int]) -> int:
        """The leaf reached by ``tokens`` + EOS from the tenant's root, or -1 if the docid is absent."""
        node = self.root_of(tenant)
        for tok in [*tokens, EOS]:
            lo, hi = int(self.row_ptr[node]), int(self.row_ptr[node + 1])
            pos = lo + int(np.searchsorted(self.child_token[lo:hi], tok))
            if pos >= hi or self.child_token[pos] != tok:
                return -1
            node = int(self.child_node[pos])
        return node if self.live[node] > 0 else -1

    def nodes_in(self, tenant: str) -> int:
        """Nodes of one tenant's subtree, root included."""
        root = self.root_of(tenant)
        count, frontier = 1, np.array([root])
        while len(frontier):
            lo, hi = self.row_ptr[frontier], self.row_ptr[frontier + 1]
            frontier = np.concatenate([self.child_node[a:b] for a, b in zip(lo, hi, strict=True)])
            count += len(frontier)
        return count

    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.row_ptr, self.child_token, self.child_node, self.live,
                                      self.leaf_value, self.node_depth))

    def to_device(self, device: torch.device) -> DeviceForest:
        return DeviceForest(
            row_ptr=torch.from_numpy(self.row_ptr).to(device),
            child_token=torch.from_numpy(self.child_token).to(device),
            child_node=torch.from_numpy(self.child_node).to(device),
            live=torch.from_numpy(self.live).to(device),
            max_depth=self.max_depth,
        )


@dataclass(frozen=True)
class DeviceForest:
    """The arrays the decoding kernels read, as tensors on the decoding device."""

    row_ptr: torch.Tensor
    child_token: torch.Tensor
    child_node: torch.Tensor
    live: torch.Tensor
    max_depth: int


def build_forest(tenants: Sequence[str], tenant_of_row: np.ndarray, tokens: np.ndarray,
                 values: np.ndarray | None = None, alive: np.ndarray | None = None) -> TrieForest:
    """Build the forest from EOS-terminated, PAD-padded token rows.

    tenant_of_row: (n,) index into ``tenants``; tokens: (n, L) with each row ``codes.. EOS PAD..``;
    values: (n,) what each leaf stands for (default: the row index); alive: (n,) bool, dead rows stay
    in the structure but count as deleted.
    """
    n, width = tokens.shape if tokens.ndim == 2 else (0, 0)
    num_roots = len(tenants)
    tenant_of_row = np.asarray(tenant_of_row, dtype=np.int64)
    values = np.arange(n, dtype=np.int64) if values is None else np.asarray(values, dtype=np.int64)
    alive = np.ones(n, dtype=bool) if alive is None else np.asarray(alive, dtype=bool)
    if n:
        has_eos = (tokens == EOS).any(axis=1)
        if not has_eos.all():
            raise ValueError("every docid row must end with EOS")
        if ((tenant_of_row < 0) | (tenant_of_row >= num_roots)).any():
            raise ValueError("tenant index out of range")

    # Sort rows by (tenant, tokens...) lexicographically; np.lexsort sorts by its last key first.
    order = np.lexsort([tokens[:, j] for j in range(width - 1, -1, -1)] + [tenant_of_row]) if n else \
        np.zeros(0, dtype=np.int64)
    toks, ten = tokens[order], tenant_of_row[order]
    vals, alv = values[order], alive[order]
    valid = toks != PAD  # (n, L): row has a node at depth j+1
    # differs[i, j]: row i's prefix of length j+1 (with tenant) differs from row i-1's.
    same_tok = np.zeros_like(valid)
    if n > 1:
        same_tok[1:] = toks[1:] == toks[:-1]
    same_ten = np.zeros(n, dtype=bool)
    if n > 1:
        same_ten[1:] = ten[1:] == ten[:-1]
    prefix_same = np.logical_and.accumulate(same_tok, axis=1) & same_ten[:, None]
    is_new = valid & ~prefix_same  # (n, L) a new node at depth j+1 starts at row i

    node_at = np.full((n, width), -1, dtype=np.int64)  # node id at depth j+1 of row i
    next_id = num_roots
    for j in range(width):
        starts = is_new[:, j]
        ids = np.cumsum(starts) - 1 + next_id
        node_at[:, j] = np.where(valid[:, j], ids, -1)
        next_id += int(starts.sum())
    num_nodes = next_id
    if n and len(np.unique(node_at[np.arange(n), (valid.sum(1) - 1)])) != n:
        raise ValueError("docids are not unique inside their namespace")

    parent = np.full(num_nodes, -1, dtype=np.int64)
    token = np.full(num_nodes, PAD, dtype=np.int64)
    depth = np.zeros(num_nodes, dtype=np.int64)
    for j in range(width):
        rows = np.nonzero(is_new[:, j])[0]
        nodes = node_at[rows, j]
        parent[nodes] = ten[rows] if j == 0 else node_at[rows, j - 1]
        token[nodes] = toks[rows, j]
        depth[nodes] = j + 1
    counts = np.bincount(parent[num_roots:], minlength=num_nodes) if num_nodes > num_roots else \
        np.zeros(num_nodes, dtype=np.int64)
    row_ptr = np.zeros(num_nodes + 1, dtype=np.int64)
    np.cumsum(counts, out=row_ptr[1:])

    live = np.zeros(num_nodes, dtype=np.int64)
    if n:
        live_rows = np.repeat(alv[:, None], width, axis=1) & valid
        np.add.at(live, node_at[live_rows], 1)
        np.add.at(live, ten[alv], 1)
    leaf_value = np.full(num_nodes, -1, dtype=np.int64)
    if n:
        last = valid.sum(1) - 1
        leaf_value[node_at[np.arange(n), last]] = vals
    max_depth = int(valid.sum(1).max()) if n else 0
    return TrieForest(tuple(tenants), row_ptr, token[num_roots:].copy(),
                      np.arange(num_roots, num_nodes, dtype=np.int64), live, leaf_value, depth, max_depth)

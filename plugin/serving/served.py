"""A tenant's namespace as decoding reads it: its parts joined into one forest on the device, and small
tries of a batch packed into one forest."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from genret.decoding.beam import Trie
from genret.decoding.trie import TrieForest, join_forests
from genret.serving.namespaces import Namespace


@dataclass(frozen=True)
class ServedTrie:
    """One tenant's trie as decoding reads it, and where each of its nodes is in the namespace's parts."""

    trie: Trie
    locate: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]  # node -> (part, node in that part)
    host: TrieForest | None = None  # a small one-part trie on the host: packed with others per batch


PACK_NODES = 65_536  # one-part tries up to this size share one forest (and kernel call) within a batch


def served_trie(ns: Namespace, device: torch.device, atomic: bool,
                own_tokens: np.ndarray | None = None) -> ServedTrie:
    """A tenant's namespace made ready for decoding on ``device``: its parts joined into one forest with
    a root each, and on an atomic index the tokens that are its own documents (``own_tokens``, by default
    the namespace's: a filtered namespace keeps its tenant's, so scores do not change under a filter)."""
    own = (torch.from_numpy(ns.first_tokens() if own_tokens is None else own_tokens).to(device)
           if atomic else None)
    if ns.delta is None:
        f = ns.base.forest
        host = f if own is None and f.num_nodes <= PACK_NODES else None
        return ServedTrie(Trie(f.to_device(device), (0,), own), lambda n: (np.zeros_like(n), n), host)
    joined = join_forests([p.forest for p in ns.parts])
    return ServedTrie(Trie(joined.arrays.to_device(device), tuple(range(len(ns.parts))), own), joined.locate)


def packed(served: Sequence[ServedTrie], device: torch.device
           ) -> tuple[list[Trie], Callable[[np.ndarray], np.ndarray]]:
    """The tries to decode a batch's queries with: the small one-part tries of different tenants packed
    into one forest with a root each (so the batch takes one kernel call per step for all of them, each
    query still decoded from its own tenant's root only), and a map from the decoded leaves (queries,
    beams) back to nodes of each query's own trie."""
    slot: dict[int, int] = {}
    hosts: list[TrieForest] = []
    for s in served:
        if s.host is not None and id(s.host) not in slot:
            slot[id(s.host)] = len(hosts)
            hosts.append(s.host)
    if len(hosts) < 2:
        return [s.trie for s in served], lambda leaves: leaves
    joined = join_forests(hosts)
    forest = joined.arrays.to_device(device)
    tries = [Trie(forest, (slot[id(s.host)],)) if s.host is not None else s.trie for s in served]
    mine = np.asarray([s.host is not None for s in served])

    def unpack(leaves: np.ndarray) -> np.ndarray:
        out = leaves.copy()
        rows = mine[:, None] & (leaves >= 0)
        part, node = joined.locate(leaves[rows])
        want = np.asarray([slot[id(s.host)] if s.host is not None else -1 for s in served])
        if not (part == np.broadcast_to(want[:, None], leaves.shape)[rows]).all():
            raise RuntimeError("decoded a docid outside the caller's namespace")
        out[rows] = node
        return out

    return tries, unpack

"""Training in several processes with torch's DistributedDataParallel, launched by ``torchrun``.

``torchrun --nproc-per-node N -m genret.cli index ...`` starts N processes; each reads its rank from the
launcher's environment (``genret.config.launcher_ranks``). Rank 0 alone opens Qdrant, assigns docids and
builds the training pairs, then hands them to every rank. Each rank trains on its own shard of the pairs
(every ``world``-th pair) with a share of the batch, DDP averages the gradients (gloo on CPU, NCCL on
GPU), and rank 0 alone writes checkpoints and the index. One process (no launcher) is world size 1 and
none of this runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


SINGLE = Ranks()


def start(ranks: Ranks, device: torch.device) -> torch.device:
    """Join the process group (env:// rendezvous, as torchrun sets it); the device this rank trains on."""
    if not ranks.active:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", ranks.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=ranks.rank, world_size=ranks.world)
    return device


def stop(ranks: Ranks) -> None:
    if ranks.active and dist.is_initialized():
        dist.destroy_process_group()


def share(value: T | None, ranks: Ranks) -> T:
    """Rank 0's ``value``, on every rank."""
    if not ranks.active:
        assert value is not None
        return value
    box: list[Any] = [value if ranks.main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]  # type: ignore[no-any-return]


def any_rank(flag: bool, ranks: Ranks, device: torch.device) -> bool:
    """Whether ``flag`` holds on any rank (so that all of them stop at the same step)."""
    if not ranks.active:
        return flag
    t = torch.tensor([int(flag)], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def wrap(model: torch.nn.Module, ranks: Ranks, device: torch.device, unused_parameters: bool) -> torch.nn.Module:
    """``model`` under DistributedDataParallel (itself when one process trains)."""
    if not ranks.active:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, find_unused_parameters=unused_parameters)


def shard(n: int, ranks: Ranks) -> list[int]:
    """The pair indexes this rank trains on."""
    return list(range(ranks.rank, n, ranks.world))

"""Frozen-encoder states kept on disk, so indexing the same texts again skips the encoder.

With ``--freeze-encoder`` every training input goes through the encoder once per build; the states depend
only on the encoder's weights and the input's token ids. The cache is a directory with one file per
encoder (named by a fingerprint of its weights) mapping each input's token-id digest to its bf16 states.
A file is replaced whole (written beside it, then renamed), so a crash leaves the old file or the new one.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

log = logging.getLogger(__name__)

Encode = Callable[[Sequence[torch.Tensor]], list[torch.Tensor]]


def encoder_fingerprint(encoder: torch.nn.Module) -> str:
    """A digest of every parameter and buffer of the encoder, in order."""
    h = hashlib.sha256()
    for name, t in [*encoder.named_parameters(), *encoder.named_buffers()]:
        h.update(name.encode())
        h.update(t.detach().to("cpu").contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:24]


def input_key(ids: torch.Tensor) -> str:
    return hashlib.sha256(ids.to(torch.int64).numpy().tobytes()).hexdigest()


def cached_states(directory: str | Path, encoder: torch.nn.Module, ids: Sequence[torch.Tensor],
                  encode: Encode) -> list[torch.Tensor]:
    """States of every input: from the cache where it has them, from ``encode`` (on the rest) otherwise;
    the cache file then holds them all."""
    path = Path(directory) / f"encoder-{encoder_fingerprint(encoder)}.pt"
    stored: dict[str, torch.Tensor] = torch.load(path, weights_only=True) if path.is_file() else {}
    keys = [input_key(x) for x in ids]
    missing = sorted({k: i for i, k in enumerate(keys) if k not in stored}.values())
    log.info("encoder states: %d of %d inputs cached in %s", len(ids) - len(missing), len(ids), path)
    if missing:
        for i, state in zip(missing, encode([ids[i] for i in missing]), strict=True):
            stored[keys[i]] = state
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        torch.save(stored, tmp)
        os.replace(tmp, path)
    return [stored[k] for k in keys]

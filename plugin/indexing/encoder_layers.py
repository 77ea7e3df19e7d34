"""A BERT-style encoder cut at one layer: the layers below the cut run once per input and their states are
cached, the layers above it train on those states.

Training the whole MiniLM encoder costs about fifteen times a frozen-encoder step on a CPU; training only its
top layers costs a fraction of that, because the embeddings and lower layers never run again. Both halves
run through the encoder's own forward (its attention masks, its layer code), with the embeddings bypassed
or the layer list cut for one call, so ``TopLayers(LowerLayers(x))`` is the encoder's output exactly.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn


def encoder_layers(encoder: nn.Module) -> nn.ModuleList:
    """The encoder's transformer layers (BERT layout: ``encoder.encoder.layer``)."""
    layers = getattr(getattr(encoder, "encoder", None), "layer", None)
    if not isinstance(layers, nn.ModuleList) or not hasattr(encoder, "embeddings"):
        raise ValueError(f"training the encoder's top layers needs a BERT-style encoder (the default model), "
                         f"not {type(encoder).__name__}")
    return layers


def check_cut(encoder: nn.Module, top: int) -> int:
    """The number of layers below the cut, for ``top`` trained layers (at least one stays below)."""
    return layers_below(len(encoder_layers(encoder)), top)


def layers_below(total: int, top: int) -> int:
    """The number of layers below the cut of a ``total``-layer encoder whose top ``top`` layers train."""
    if not 0 < top < total:
        raise ValueError(f"--train-encoder-layers must be between 1 and {total - 1} for this "
                         f"{total}-layer encoder, got {top}")
    return total - top


class _StatesIn(nn.Module):
    """Stands in for the embeddings: the given states pass through unchanged."""

    def forward(self, inputs_embeds: torch.Tensor | None = None, **_: Any) -> torch.Tensor:
        if inputs_embeds is None:
            raise ValueError("the top layers read states, not token ids")
        return inputs_embeds


@contextmanager
def _cut(encoder: nn.Module, layers: nn.ModuleList, embeddings: nn.Module) -> Iterator[None]:
    """For one call, the encoder runs ``layers`` after ``embeddings`` instead of its own."""
    inner: nn.Module = encoder.encoder  # type: ignore[assignment]
    own_layers, own_embeddings = inner.layer, encoder.embeddings
    inner.layer, encoder.embeddings = layers, embeddings  # type: ignore[assignment]
    try:
        yield
    finally:
        inner.layer, encoder.embeddings = own_layers, own_embeddings  # type: ignore[assignment]


class LowerLayers(nn.Module):
    """The embeddings and the layers below the cut. Its parameters (and so the encoder-cache fingerprint of
    ``genret.indexing.state_cache``) are theirs only, with the cut as a buffer: states cut elsewhere never
    share a cache file."""

    embeddings: nn.Module

    def __init__(self, encoder: nn.Module, keep: int) -> None:
        super().__init__()
        self.embeddings = encoder.embeddings  # type: ignore[assignment]
        self.layers = nn.ModuleList(list(encoder_layers(encoder))[:keep])
        self.register_buffer("cut", torch.tensor([keep]))
        self._encoder = (encoder,)  # not a child: the layers above the cut are not part of this module

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Any:
        """The encoder's output object, whose ``last_hidden_state`` is (b, tokens, hidden) at the cut."""
        encoder = self._encoder[0]
        with _cut(encoder, self.layers, self.embeddings):
            return encoder(input_ids=input_ids, attention_mask=attention_mask)


class TopLayers(nn.Module):
    """The layers above the cut, run on states at the cut; its parameters are what trains."""

    def __init__(self, encoder: nn.Module, keep: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(list(encoder_layers(encoder))[keep:])
        self._encoder = (encoder,)
        self._states_in = _StatesIn()

    def forward(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(b, tokens, hidden) states at the cut → the encoder's last hidden state."""
        encoder = self._encoder[0]
        with _cut(encoder, self.layers, self._states_in):
            out = encoder(inputs_embeds=hidden, attention_mask=attention_mask)
        return out.last_hidden_state  # type: ignore[no-any-return]

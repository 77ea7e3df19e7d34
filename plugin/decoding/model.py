"""The seq2seq backend beam search drives, and the docid output head it reads.

``Seq2SeqBackend`` is the interface: encode queries once, start the decoder for a number of beams, take
one step with the KV cache, reorder the cache. ``HFSeq2SeqBackend`` runs any Hugging Face encoder-decoder
whose docid tokens sit in its vocabulary as the index manifest's ``ModelSpec`` says: ``token_map(spec)[i]``
is the model token of docid token ``i`` and the model's output is read only at those columns, so
probabilities are over the docid vocabulary. The models themselves are built in ``genret.indexing.models``.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import (
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)
from transformers.modeling_outputs import BaseModelOutput

from genret.data.index_dir import ModelSpec


def token_map(spec: ModelSpec, device: torch.device) -> torch.Tensor:
    """The model token of each docid token: ``token_map(spec)[i]`` is docid token ``i``."""
    return torch.arange(spec.docid_vocab, device=device) + spec.token_offset


def seed_docid_embeddings(model: PreTrainedModel, spec: ModelSpec, tokens: Sequence[int],
                          vectors: np.ndarray) -> None:
    """Start docid token ``tokens[i]``'s output-layer row at the unit vector ``vectors[i]`` (the document's
    embedding; a zero vector gives a neutral row), so a query's logit for a document begins as a scaled
    cosine between the decoder's output features and that document. Input embeddings tied to the output
    layer start there too."""
    layer = model.get_output_embeddings()
    weight: torch.Tensor = layer.weight  # type: ignore[union-attr,assignment]
    if vectors.ndim != 2 or vectors.shape[0] != len(tokens):
        raise ValueError(f"need one vector per docid token, got {vectors.shape} for {len(tokens)} tokens")
    if vectors.shape[1] != weight.shape[1]:
        raise ValueError(f"document vectors have {vectors.shape[1]} dimensions, the model's output layer "
                         f"{weight.shape[1]}: seeding docid embeddings needs the default model")
    unit = torch.as_tensor(unit_rows(vectors), dtype=weight.dtype, device=weight.device)
    rows = torch.as_tensor(np.asarray(tokens), dtype=torch.long, device=weight.device) + spec.token_offset
    with torch.no_grad():
        weight[rows] = unit
        bias = getattr(layer, "bias", None)
        if isinstance(bias, torch.Tensor):
            bias[rows] = 0.0


def unit_rows(vectors: np.ndarray) -> np.ndarray:
    """Each row scaled to unit length (a zero row stays zero)."""
    return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def pooled_query(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(b, hidden) unit mean of the encoder states over the mask: the query's sentence embedding (MiniLM's
    pooling), which ``ModelSpec.query_skip`` adds to the first decoder step's output features."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return torch.nn.functional.normalize((hidden * m).sum(1) / m.sum(1).clamp(min=1e-9), dim=-1)


def load_trained(path: str | Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """A model and tokenizer saved by ``genret index``."""
    model = AutoModelForSeq2SeqLM.from_pretrained(str(path))
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    return model, tokenizer


# --- decoding interface ------------------------------------------------------------------------


@dataclass
class EncodedQueries:
    hidden: torch.Tensor  # (batch, tokens, hidden)
    mask: torch.Tensor  # (batch, tokens)


@dataclass
class DecodeState:
    hidden: torch.Tensor  # (batch, tokens, hidden) before the first step, (batch*beams, ...) after
    mask: torch.Tensor  # same rows as hidden
    beams: int
    past: Any = None


@dataclass(frozen=True)
class DocidHead:
    """The output layer restricted to the docid vocabulary: logits = features @ weight.T + bias."""

    weight: torch.Tensor  # (V, hidden)
    bias: torch.Tensor | None  # (V,)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        out = features @ self.weight.T  # (rows, V)
        return out + self.bias if self.bias is not None else out


class Seq2SeqBackend(ABC):
    """What beam search needs from a model: encode once, then one decoder step at a time.

    ``step`` returns the decoder's output features (the output layer's input); ``head`` turns them into
    docid-vocabulary logits, so a caller can compute logits for every docid token or only some.
    """

    docid_vocab: int
    device: torch.device
    head: DocidHead

    @abstractmethod
    def encode(self, texts: Sequence[str], max_tokens: int | None = None) -> EncodedQueries:
        """The texts' encoder output, each cut to ``max_tokens`` (None: the backend's query limit)."""

    @abstractmethod
    def start(self, enc: EncodedQueries, beams: int) -> DecodeState: ...

    @abstractmethod
    def step(self, state: DecodeState, tokens: torch.Tensor | None) -> torch.Tensor:
        """Feed docid tokens (rows,) (None: the start token); return output features (rows, hidden)."""

    @abstractmethod
    def reorder(self, state: DecodeState, index: torch.Tensor) -> None:
        """Make row r of the state what row index[r] was (beam selection)."""


def _output_slot(model: PreTrainedModel) -> tuple[torch.nn.Module, str, torch.nn.Module]:
    """(parent module, attribute name, module) of the model's output layer."""
    out = model.get_output_embeddings()
    for parent in model.modules():
        for name, child in parent.named_children():
            if child is out:
                return parent, name, child
    raise ValueError(f"{type(model).__name__} has no output embedding layer")


@contextmanager
def _features_out(model: PreTrainedModel, parent: torch.nn.Module, name: str,
                  layer: torch.nn.Module) -> Iterator[None]:
    """The model's forward returns the output layer's input instead of its output, for one call."""
    setattr(parent, name, torch.nn.Identity())
    final_bias = getattr(model, "final_logits_bias", None)  # BART-style bias added after the output layer
    if isinstance(final_bias, torch.Tensor):
        setattr(model, "final_logits_bias", torch.zeros(1, 1, device=final_bias.device))  # noqa: B010
    try:
        yield
    finally:
        setattr(parent, name, layer)
        if isinstance(final_bias, torch.Tensor):
            setattr(model, "final_logits_bias", final_bias)  # noqa: B010


class HFSeq2SeqBackend(Seq2SeqBackend):
    """Decoding with any Hugging Face encoder-decoder, with its KV cache."""

    def __init__(self, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, spec: ModelSpec,
                 device: torch.device, max_query_tokens: int = 64) -> None:
        self.model = model.to(device).eval()  # type: ignore[arg-type]
        self.tokenizer = tokenizer
        self.spec = spec
        self.device = device
        self.docid_vocab = spec.docid_vocab
        self.token_map = token_map(spec, device)  # (V,)
        self.max_query_tokens = max_query_tokens
        # transformers 5.x names the KV cache argument ``cache``; 4.x calls it ``past_key_values``.
        params = inspect.signature(self.model.forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"
        self._slot = _output_slot(self.model)
        layer_weight: torch.Tensor = self._slot[2].weight  # type: ignore[assignment]
        layer_bias: torch.Tensor | None = getattr(self._slot[2], "bias", None)
        with torch.no_grad():
            weight = layer_weight.index_select(0, self.token_map).detach().clone()
            bias = layer_bias.index_select(0, self.token_map).detach().clone() if layer_bias is not None else None
            final = getattr(self.model, "final_logits_bias", None)
            if isinstance(final, torch.Tensor):
                extra = final.reshape(-1).index_select(0, self.token_map)
                bias = extra if bias is None else bias + extra
        self.head = DocidHead(weight, bias)

    @torch.inference_mode()
    def encode(self, texts: Sequence[str], max_tokens: int | None = None) -> EncodedQueries:
        batch = self.tokenizer(list(texts), padding=True, truncation=True,
                               max_length=max_tokens or self.max_query_tokens, return_tensors="pt").to(self.device)
        out = self.model.get_encoder()(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        return EncodedQueries(out.last_hidden_state, batch["attention_mask"])

    def start(self, enc: EncodedQueries, beams: int) -> DecodeState:
        return DecodeState(enc.hidden, enc.mask, beams)

    @torch.inference_mode()
    def step(self, state: DecodeState, tokens: torch.Tensor | None) -> torch.Tensor:
        """The first step runs once per query (all its beams are the same start token), so cross-attention
        keys and values are computed per query; then the cache is expanded to every beam."""
        rows = state.hidden.shape[0]
        if tokens is None:
            ids = torch.full((rows, 1), self.spec.start_token, dtype=torch.long, device=self.device)
        else:
            ids = self.token_map[tokens.clamp(min=0)].unsqueeze(1)  # (rows, 1)
        with _features_out(self.model, *self._slot):
            out = self.model(encoder_outputs=BaseModelOutput(last_hidden_state=state.hidden),
                             attention_mask=state.mask, decoder_input_ids=ids, use_cache=True,
                             **{self._cache_arg: state.past})
        state.past = getattr(out, self._cache_arg)
        features = out.logits[:, -1, :]  # (rows, hidden): the output layer's input
        if tokens is None and self.spec.query_skip:
            features = features + self.spec.query_skip * pooled_query(state.hidden, state.mask).to(features.dtype)
        if tokens is None:
            expand = torch.arange(rows, device=self.device).repeat_interleave(state.beams)  # (batch*beams,)
            state.past.reorder_cache(expand)
            state.hidden, state.mask = state.hidden[expand], state.mask[expand]
            features = features[expand]
        return features

    def seed_rows(self, tokens: Sequence[int], vectors: np.ndarray) -> None:
        """Rows of docid ``tokens`` set to the unit ``vectors`` (with bias 0), in the model and in the head
        beam search reads: documents written into an embedding-seeded index. Called for tokens that no
        trie holds yet, so no search in flight can produce them."""
        seed_docid_embeddings(self.model, self.spec, tokens, vectors)
        idx = torch.as_tensor(list(tokens), dtype=torch.long, device=self.device)
        with torch.no_grad():
            self.head.weight[idx] = torch.as_tensor(unit_rows(vectors), dtype=self.head.weight.dtype,
                                                    device=self.device)
            if self.head.bias is not None:
                self.head.bias[idx] = 0.0

    def reorder(self, state: DecodeState, index: torch.Tensor) -> None:
        """Beams only move within their query, whose cross-attention keys and values are the same for
        every beam: only the self-attention cache needs reordering."""
        if state.past is None:
            return
        self_cache = getattr(state.past, "self_attention_cache", None)
        (self_cache if self_cache is not None else state.past).reorder_cache(index)

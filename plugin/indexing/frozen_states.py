"""Frozen-encoder states computed once and used twice: pooled into sentence embeddings for the teacher's
dense ranking, and kept for training, whose encoder pass then skips them.

Only for the default model, whose encoder is all-MiniLM-L6-v2 as shipped: its mean-pooled states are the
dense retriever's query embeddings (over the training's first ``max_tokens`` tokens). With an encoder
cache directory (``--encoder-cache``), states already on disk are read instead of computed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from transformers import AutoTokenizer, BertModel

from genret.data.embed import minilm_path
from genret.decoding.model import pooled_query
from genret.indexing.state_cache import cached_states, input_key
from genret.indexing.training import encode_inputs, token_ids


class FrozenStates:
    """MiniLM states of every text embedded so far (``states``, by input key)."""

    def __init__(self, device: torch.device, max_tokens: int, batch_size: int = 64, progress: bool = True,
                 cache_dir: str | None = None) -> None:
        src = str(minilm_path())
        self.tokenizer = AutoTokenizer.from_pretrained(src)
        self.encoder = BertModel.from_pretrained(src, add_pooling_layer=False).to(device).eval()  # type: ignore[arg-type]
        self.device = device
        self.max_tokens = max_tokens
        self.batch_size = batch_size
        self.progress = progress
        self.cache_dir = cache_dir
        self.states: dict[str, torch.Tensor] = {}

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) unit sentence embeddings; each text's states are kept."""
        ids = token_ids(self.tokenizer, texts, self.max_tokens)
        keys = [input_key(x) for x in ids]
        todo = list({k: i for i, k in enumerate(keys) if k not in self.states}.values())
        if todo:
            todo_ids = [ids[i] for i in todo]
            new = cached_states(self.cache_dir, self.encoder, todo_ids, self._encode) if self.cache_dir \
                else self._encode(todo_ids)
            self.states.update(zip([keys[i] for i in todo], new, strict=True))
        out = [pooled_query(self.states[k].float()[None], torch.ones(1, self.states[k].shape[0])) for k in keys]
        return torch.cat(out).numpy() if out else np.zeros((0, self.encoder.config.hidden_size), np.float32)

    def _encode(self, ids: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return encode_inputs(self.encoder, ids, self.device, self.batch_size, self.progress)

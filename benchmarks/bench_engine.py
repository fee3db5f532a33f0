"""Engine benchmark: KV cache on/off and batched/sequential branches, FLOPs and seconds per Euler step.

    python -m benchmarks.bench_engine [--device cpu|cuda] [--dtype fp32|bf16] [--hidden 256 --layers 4 --side 256]

A random OmniGen-architecture model (ditfuse_core.tiny); prints a table; nothing here is a pass/fail test.
"""
from __future__ import annotations

import argparse

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks import common
from ditfuse_core import prompts, sampler
from ditfuse_core.tiny import tiny_transformer

MODES = [("uncached", dict(use_cache=False, batch_branches=False)),
         ("cached, branches one by one", dict(use_cache=True, batch_branches=False)),
         ("cached, branches batched", dict(use_cache=True, batch_branches=True))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_device_args(ap)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--side", type=int, default=256, help="image side in pixels (tokens = side²/256)")
    ap.add_argument("--steps", type=int, default=4)
    args = ap.parse_args()
    dtype = torch.float32 if args.dtype == "fp32" else torch.bfloat16
    model = tiny_transformer(hidden=args.hidden, layers=args.layers, heads=max(4, args.hidden // 64),
                             intermediate=args.hidden * 2).to(args.device, dtype)
    pipe = common.random_pipeline(model)
    lat = args.side // 8
    g = torch.Generator().manual_seed(0)
    branches = pipe.branches(prompts.fusion_prompt("ivif"),
                             [torch.randn(1, 4, lat, lat, generator=g), torch.randn(1, 4, lat, lat, generator=g)])
    noise = sampler.initial_noise(0, 1, (4, lat, lat))

    def run(steps, **kw):
        return sampler.sample(model, [branches], noise, steps=steps, cfg=2.0, img_cfg=1.6, **kw)

    rows, results = [], {}
    for name, kw in MODES:
        flops = []
        for steps in (1, 2):
            with FlopCounterMode(display=False) as fc:
                run(steps, **kw)
            flops.append(fc.get_total_flops())
        run(1, **kw)  # warm-up
        results[name], sec = common.timed(lambda: run(args.steps, **kw), args.device)
        rows.append((name, (flops[1] - flops[0]) / 1e9, sec / args.steps))
    ref = results["uncached"]
    tokens = branches.cond.length + 1 + (lat // 2) ** 2
    print(f"\nDiTFuse engine, {args.device} {args.dtype}, hidden {args.hidden}, {args.layers} layers, "
          f"{args.side}x{args.side} px inputs, longest branch {tokens} tokens, 3 guidance branches\n")
    print(common.markdown_table(
        ["mode", "GFLOP / step", "s / step", "max \\|Δ\\| vs uncached"],
        [(name, f"{gf:.2f}", f"{sec:.4f}", f"{(results[name] - ref).abs().max().item():.1e}")
         for name, gf, sec in rows]))


if __name__ == "__main__":
    main()

"""Engine benchmark: KV cache on/off, batched/sequential branches and the low-VRAM placements: FLOPs and seconds
per Euler step and for the prefill, exactness.

    python -m benchmarks.bench_engine [--device cpu|cuda] [--dtype fp32|bf16] [--hidden 256 --layers 4 --side 256]

A random OmniGen-architecture model (ditfuse_core.tiny); prints a table; nothing here is a pass/fail test. On a
CPU the placements (KV cache on the CPU, blocks offloaded) move nothing and are left out.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks import common
from ditfuse_core import prompts, sampler
from ditfuse_core.tiny import tiny_transformer

MODES = [("uncached", dict(use_cache=False, batch_branches=False)),
         ("cached, branches one by one", dict(batch_branches=False)),
         ("cached, branches batched", dict(batch_branches=True)),
         ("cached, batched, KV cache fp8", dict(kv_cache="fp8"))]
PLACEMENTS = [("cached, batched, KV cache on the CPU", dict(offload="kv_cpu")),
              ("cached, batched, blocks + KV cache on the CPU", dict(offload="layers"))]


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
                             intermediate=args.hidden * 2, pos_embed_max_size=max(64, args.side // 16))
    model = model.to(args.device, dtype)
    pipe = common.random_pipeline(model)
    lat = args.side // 8
    g = torch.Generator().manual_seed(0)
    branches = pipe.branches(prompts.fusion_prompt("ivif"),
                             [torch.randn(1, 4, lat, lat, generator=g), torch.randn(1, 4, lat, lat, generator=g)])
    noise = sampler.initial_noise(0, 1, (4, lat, lat))
    prefill = model.prefill

    def run(steps, marks=None, **kw):
        """marks (a dict), when given, gets "prefill": seconds per prefill call (one per group of branches) and
        "steps": the end of the last prefill, then each step's end."""
        def timed_prefill(*a, **k):
            common.sync(args.device)
            t0 = time.perf_counter()
            out = prefill(*a, **k)
            common.sync(args.device)
            marks["prefill"].append(time.perf_counter() - t0)
            marks["steps"] = [time.perf_counter()]
            return out

        def step_end(*_):
            common.sync(args.device)
            marks["steps"].append(time.perf_counter())

        model.prefill = prefill if marks is None else timed_prefill
        try:
            return sampler.sample(model, [branches], noise, steps=steps, cfg=2.0, img_cfg=1.6,
                                  progress=None if marks is None else step_end, **kw)
        finally:
            del model.prefill
            model.onload_layers()

    modes = MODES + (PLACEMENTS if torch.device(args.device).type != "cpu" else [])
    rows, results = [], {}
    load = [os.getloadavg()[0]]
    for name, kw in modes:
        flops = []
        for steps in (1, 2):
            with FlopCounterMode(display=False) as fc:
                run(steps, **kw)
            flops.append(fc.get_total_flops())
        cached = kw.get("use_cache", True)
        run(1, **kw)  # warm-up
        marks = {"prefill": [], "steps": []}
        t0 = time.perf_counter()
        results[name] = run(args.steps, marks if cached else None, **kw)
        common.sync(args.device)
        total = time.perf_counter() - t0
        if cached:
            pre = sum(marks["prefill"])
            per = statistics.median(b - a for a, b in zip(marks["steps"], marks["steps"][1:]))
        else:
            pre, per = None, total / args.steps
        step_flops = flops[1] - flops[0]
        rows.append((name, step_flops / 1e9, (flops[0] - step_flops) / 1e9 if cached else None, per, pre))
    load.append(os.getloadavg()[0])
    ref = results["uncached"]
    tokens = branches.cond.length + 1 + (lat // 2) ** 2
    print(f"\nDiTFuse engine, {args.device} {args.dtype}, hidden {args.hidden}, {args.layers} layers, "
          f"{args.side}x{args.side} px inputs, longest branch {tokens} tokens, 3 guidance branches; load average "
          f"{min(load):.1f}-{max(load):.1f}\n")

    def f(x, spec):
        return "–" if x is None else format(x, spec)

    print(common.markdown_table(
        ["mode", "GFLOP / step", "prefill GFLOP", "s / step", "prefill s", "prefill / step",
         "max \\|Δ\\| vs uncached"],
        [(name, f"{gf:.2f}", f(pgf, ".2f"), f(sec, ".4f"), f(pre, ".4f"),
          f(None if pre is None or not sec else pre / sec, ".2f"),
          f"{(results[name] - ref).abs().max().item():.1e}") for name, gf, pgf, sec, pre in rows]))


if __name__ == "__main__":
    main()

"""OmniGen-v1 at real size with RANDOM weights: our engine against diffusers' OmniGenPipeline on one GPU.

    bash benchmarks/gpu_check.sh                                              # the GPU check, ≤ 7 min on an H200
    python -m benchmarks.bench_real_size_gpu --small --device cpu --out /tmp/rs  # the same script, tiny, on a CPU

Real architecture (hidden 3072, 32 layers, 32 heads, MLP 8192, vocab 32064, patch 2, Phi-3 "su" LongRoPE with
48 short/long factors, window 4096 of 131072, position table 192), built directly on the device and
initialised there (normal 0, 0.02), in bf16; an SDXL-shaped AutoencoderKL (128/256/512/512, 4 latent channels,
scaling 0.13025) in the dtype the engine gives it on that device. Two 1024×1024 inputs (the example IVIF pair,
upsampled), task "ivif", the authors' 50 steps, cfg 2.0, img_cfg 1.6, three guidance branches.

Measured, after warm-up, on one call each: seconds for the whole call (encode, prefill, 50 cached steps,
decode), per cached step, for the prefill, peak memory (torch.cuda.max_memory_allocated / reserved after
reset_peak_memory_stats, the weights included), and the share of the GPU's dense bf16 peak that the counted
FLOPs (torch.utils.flop_counter on 1- and 2-step calls: whole call = 1-step call + 49 × one step) reach.
Then the same weights (the same module: DiTFuseTransformer does not override diffusers' forward), VAE, images
and noise in diffusers' OmniGenPipeline (the authors' schedule: FlowMatchEulerDiscreteScheduler(1, invert)),
at as many steps as the time budget allows, extrapolated per step to 50 when fewer (said so in the table).
Our results are written to --out before diffusers starts; a failure there still leaves our table.
"""
from __future__ import annotations

import argparse
import csv
import datetime as _dt
import gc
import json
import math
import os
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks import common

H200_SPEC_TFLOPS = 989.0  # dense bf16, datasheet (SXM)
H200_MEASURED_TFLOPS = 790.0  # 8192³ bf16 matmuls, measured on these machines (KINDS.md)
GIB = 2**30


# ---------------------------------------------------------------------------------------------------------
# models
def build_transformer(small: bool, device: torch.device, dtype: torch.dtype, seed: int = 0):
    """The real OmniGen-v1 shape (or --small's), constructed on the device and initialised there."""
    from ditfuse_core.tiny import tiny_transformer_config
    from ditfuse_core.transformer import DiTFuseTransformer

    if small:
        cfg = tiny_transformer_config(hidden=256, layers=4, heads=4, intermediate=512, pos_embed_max_size=192,
                                      seed=seed)
    else:
        cfg = tiny_transformer_config(hidden=3072, layers=32, heads=32, kv_heads=32, intermediate=8192,
                                      in_channels=4, patch_size=2, original_max_position_embeddings=4096,
                                      pos_embed_max_size=192, seed=seed)
    assert len(cfg["rope_scaling"]["short_factor"]) == cfg["hidden_size"] // cfg["num_attention_heads"] // 2
    torch.manual_seed(seed)
    with torch.device(device):  # fp32 construction on the device (buffers as the loader computes them), then cast
        model = DiTFuseTransformer(**cfg)
    model = model.to(device=device, dtype=dtype)  # also any buffer a constructor put on the CPU
    _init_(model, seed)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return model.eval().requires_grad_(False)


def build_vae(small: bool, device: torch.device, dtype: torch.dtype, seed: int = 0):
    from diffusers import AutoencoderKL

    torch.manual_seed(seed + 1)
    ch = (32, 32, 64, 64) if small else (128, 256, 512, 512)
    with torch.device(device):
        vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4,
                            down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                            block_out_channels=ch, layers_per_block=1 if small else 2, norm_num_groups=32,
                            act_fn="silu", sample_size=256 if small else 1024, scaling_factor=0.13025,
                            force_upcast=True)
    # as ditfuse_core.vae.load_vae: fp16 → fp32 for a force_upcast VAE, channels_last
    if dtype == torch.float16:
        dtype = torch.float32
    return vae.to(device=device, dtype=dtype).to(memory_format=torch.channels_last).eval().requires_grad_(False)


@torch.no_grad()
def _init_(model, seed: int) -> None:
    """normal(0, 0.02) for matrices and embeddings, 1 for norm weights, 0 for other vectors; on the device."""
    dev = next(model.parameters()).device
    g = torch.Generator(dev).manual_seed(seed)
    for name, p in model.named_parameters():
        if p.dim() >= 2:
            p.normal_(0.0, 0.02, generator=g)
        elif "norm" in name and name.endswith("weight"):
            p.fill_(1.0)
        else:
            p.zero_()


def param_count(m) -> int:
    """Parameters and buffers (the position table is a buffer here, a weight in the original checkpoint)."""
    return sum(p.numel() for p in m.parameters()) + sum(b.numel() for b in m.buffers())


# ---------------------------------------------------------------------------------------------------------
# timing and memory
class Clock:
    """Marks on the device's timeline (CUDA events: no synchronisation inside the timed call), else wall time."""

    def __init__(self, device: torch.device):
        self.device = device
        self.cuda = device.type == "cuda"

    def mark(self):
        if self.cuda:
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            return e
        return time.perf_counter()

    def sync(self):
        common.sync(self.device)

    def seconds(self, a, b) -> float:
        if self.cuda:
            return a.elapsed_time(b) / 1000.0
        return b - a


def reset_peak(device):
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak(device) -> dict:
    if device.type != "cuda":
        return {"peak_alloc_gib": None, "peak_reserved_gib": None}
    torch.cuda.synchronize()
    return {"peak_alloc_gib": torch.cuda.max_memory_allocated() / GIB,
            "peak_reserved_gib": torch.cuda.max_memory_reserved() / GIB}


def resident_gib(device) -> float | None:
    return torch.cuda.memory_allocated() / GIB if device.type == "cuda" else None


class Probe:
    """Wraps pipe.encode / pipe.decode / transformer.prefill (instance attributes) to mark their start and end
    on the clock and, under a FlopCounterMode, the FLOPs counted before and after; the progress callback
    marks each step's end."""

    def __init__(self, pipe, clock: Clock, fc: FlopCounterMode | None = None):
        self.pipe, self.clock, self.fc = pipe, clock, fc
        self.events: list[tuple[str, object, object, int, int]] = []
        self.steps: list[object] = []
        self.branch_lengths: list[int] = []
        self.n_tokens = None

    def _flops(self) -> int:
        return self.fc.get_total_flops() if self.fc is not None else 0

    def _wrap(self, obj, name):
        fn = getattr(obj, name)

        def run(*args, **kw):
            a, fa = self.clock.mark(), self._flops()
            out = fn(*args, **kw)
            self.events.append((name, a, self.clock.mark(), fa, self._flops()))
            if name == "prefill":
                self.branch_lengths = [b.length for b in args[0]]
                self.n_tokens = args[2]
            return out

        setattr(obj, name, run)

    def __enter__(self):
        self._wrap(self.pipe, "encode")
        self._wrap(self.pipe, "decode")
        self._wrap(self.pipe.transformer, "prefill")
        return self

    def __exit__(self, *exc):
        for obj, name in ((self.pipe, "encode"), (self.pipe, "decode"), (self.pipe.transformer, "prefill")):
            obj.__dict__.pop(name, None)

    def progress(self, done, total):
        self.steps.append(self.clock.mark())

    def stage_seconds(self, name) -> float:
        return sum(self.clock.seconds(a, b) for n, a, b, _, _ in self.events if n == name)

    def stage_flops(self, name) -> int:
        return sum(fb - fa for n, _, _, fa, fb in self.events if n == name)

    def step_seconds(self) -> list[float]:
        """Per step: step 1 from the prefill's end, the others from the previous step's end."""
        pre_end = [b for n, _, b, _, _ in self.events if n == "prefill"][-1]
        marks = [pre_end, *self.steps]
        return [self.clock.seconds(a, b) for a, b in zip(marks, marks[1:])]


# ---------------------------------------------------------------------------------------------------------
def matmul_tflops(device, dtype, n: int = 8192, iters: int = 20) -> float | None:
    if device.type != "cuda":
        return None
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    s.record()
    for _ in range(iters):
        a @ b
    e.record()
    torch.cuda.synchronize()
    sec = s.elapsed_time(e) / 1000 / iters
    del a, b
    torch.cuda.empty_cache()
    return 2 * n**3 / sec / 1e12


# ---------------------------------------------------------------------------------------------------------
def run_ours(args, device, transformer, vae, images, res: dict, deadline: float):
    clock = Clock(device)
    pipe = common.random_pipeline(transformer, vae)
    side = pipe.working_side(images[0].size, args.side)
    res["working_side"] = side
    if side != args.side:
        raise RuntimeError(f"working side is {side}, not {args.side}")
    call = dict(task="ivif", seed=args.seed, cfg=args.cfg, img_cfg=args.img_cfg, max_side=args.side)

    # FLOPs (and warm-up): 1- and 2-step calls under the counter
    counted = {}
    for n in (1, 2):
        with FlopCounterMode(display=False) as fc, Probe(pipe, clock, fc) as pr:
            out = pipe.fuse(images[0], images[1], steps=n, progress=pr.progress, **call)
        counted[n] = dict(total=fc.get_total_flops(), prefill=pr.stage_flops("prefill"),
                          encode=pr.stage_flops("encode"), decode=pr.stage_flops("decode"))
        res["branch_lengths"] = pr.branch_lengths
        res["output_tokens"] = pr.n_tokens
    step_flops = counted[2]["total"] - counted[1]["total"]
    flops = dict(step=step_flops, prefill=counted[1]["prefill"], encode=counted[1]["encode"],
                 decode=counted[1]["decode"])
    flops["call"] = counted[1]["total"] + (args.steps - 1) * step_flops
    flops["transformer"] = flops["prefill"] + args.steps * step_flops
    res["flops"] = flops
    print(f"[ours] output {out[0].size}, branches {res['branch_lengths']} condition tokens + "
          f"{1 + res['output_tokens']} per step; FLOPs: prefill {sig(flops['prefill'] / 1e12)} T, cached step "
          f"{sig(step_flops / 1e12)} T, whole {args.steps}-step call {sig(flops['call'] / 1e15)} P", flush=True)

    # plain warm-up (no counter), then the timed call
    pipe.fuse(images[0], images[1], steps=args.warmup_steps, **call)
    reset_peak(device)
    base = resident_gib(device)
    with Probe(pipe, clock) as pr:
        clock.sync()
        w0 = time.perf_counter()
        m0 = clock.mark()
        out = pipe.fuse(images[0], images[1], steps=args.steps, progress=pr.progress, **call)
        m1 = clock.mark()
        clock.sync()
        wall = time.perf_counter() - w0
    mem = peak(device)
    steps = pr.step_seconds()
    cached = steps[1:] or steps
    total = clock.seconds(m0, m1)
    arr = np.asarray(out[0], dtype=np.float32)
    r = dict(engine="ours (DiTFusePipeline)", steps_run=args.steps, extrapolated=False, seconds=total,
             wall_seconds=wall, seconds_50=total, per_step=statistics.median(cached), per_step_mean=statistics.fmean(cached),
             step1=steps[0], prefill=pr.stage_seconds("prefill"), encode=pr.stage_seconds("encode"),
             decode=pr.stage_seconds("decode"), resident_gib=base, **mem,
             tflop=flops["call"] / 1e12, flop_step=step_flops, flop_prefill=flops["prefill"], output_finite=bool(np.isfinite(arr).all()), output_std=float(arr.std()))
    r["other"] = total - r["encode"] - r["prefill"] - sum(steps) - r["decode"]
    r["prefill_over_step"] = r["prefill"] / r["per_step"]
    sampling = r["prefill"] + sum(steps)
    r["tflops_per_s"] = flops["call"] / total / 1e12
    r["transformer_tflops_per_s"] = flops["transformer"] / sampling / 1e12
    r["step_tflops_per_s"] = step_flops / r["per_step"] / 1e12
    r["prefill_tflops_per_s"] = flops["prefill"] / r["prefill"] / 1e12
    r["step_seconds"] = steps
    res["ours"] = r
    print(f"[ours] {args.steps} steps: {total:.2f} s (wall {wall:.2f}), {r['per_step'] * 1e3:.1f} ms/step, "
          f"prefill {r['prefill'] * 1e3:.0f} ms ({r['prefill_over_step']:.2f} steps), encode "
          f"{r['encode'] * 1e3:.0f} ms, decode {r['decode'] * 1e3:.0f} ms, peak {fmt(mem['peak_alloc_gib'])} GiB",
          flush=True)

    # engine modes: branches batched vs one by one, KV cache fp8 / on the CPU, blocks offloaded (prepared condition)
    if args.branch_steps and time.time() < deadline - 60:
        try:
            res["branches"] = branches(pipe, images, args, device, clock)
        except Exception as e:  # optional
            traceback.print_exc()
            res["branches_error"] = repr(e)
    del pipe
    gc.collect()


# engine options (issue #27): branches batched / one by one, and the low-VRAM placements
ENGINE_MODES = [("batched", {}), ("one by one", dict(batch_branches=False)), ("KV cache fp8", dict(kv_cache="fp8")),
                ("KV cache on the CPU", dict(offload="kv_cpu")),
                ("blocks + KV cache on the CPU", dict(offload="layers"))]


@torch.no_grad()
def branches(pipe, images, args, device, clock):
    """Each engine mode on the prepared condition (sampling only): seconds, per step, prefill + step 1, peak
    memory (weights included: the offloaded blocks are moved off before the peak is reset), max |Δ| of the
    latents from the batched default."""
    from ditfuse_core import prompts

    pix, _ = pipe.preprocess(images, args.side)
    lats = [pipe.encode(p, seed=k) for k, p in enumerate(pix)]
    cond = pipe.branches(prompts.fusion_prompt("ivif"), lats)
    model = pipe.transformer
    rows, ref = [], None
    run = dict(seed=args.seed, cfg=args.cfg, img_cfg=args.img_cfg)
    try:
        for mode, kw in ENGINE_MODES:
            if kw.get("offload") == "layers":
                model.offload_layers()
            pipe.sample(cond, steps=1, **run, **kw)
            reset_peak(device)
            marks = []
            a = clock.mark()
            x = pipe.sample(cond, steps=args.branch_steps, **run, **kw, progress=lambda *_: marks.append(clock.mark()))
            b = clock.mark()
            clock.sync()
            per = [clock.seconds(m0, m1) for m0, m1 in zip(marks, marks[1:])]
            ref = x if ref is None else ref
            rows.append(dict(mode=mode, steps=args.branch_steps, seconds=clock.seconds(a, b),
                             prefill_plus_step1=clock.seconds(a, marks[0]), resident_gib=resident_gib(device),
                             per_step=statistics.median(per) if per else None, **peak(device),
                             max_abs_delta=(x.float() - ref.float()).abs().max().item()))
            print(f"[modes] {mode}: {args.branch_steps} steps {rows[-1]['seconds']:.2f} s, "
                  f"{fmt(rows[-1]['per_step'], 4)} s/step, peak {fmt(rows[-1]['peak_alloc_gib'])} GiB, "
                  f"max |Δ| {rows[-1]['max_abs_delta']:.2e}", flush=True)
    finally:
        model.onload_layers()
    return rows


# ---------------------------------------------------------------------------------------------------------
def run_diffusers(args, device, transformer, vae, images, res: dict, deadline: float):
    from diffusers import OmniGenTransformer2DModel

    from ditfuse_core import prompts, reference, sampler

    # the same weights: our class adds methods but runs diffusers' own forward
    assert type(transformer).forward is OmniGenTransformer2DModel.forward
    ref = reference.diffusers_pipeline(transformer, vae)
    ref.set_progress_bar_config(disable=True)
    clock = Clock(device)
    side = args.side
    lat = side // 8
    prompt = prompts.fusion_prompt("ivif")

    def call(n, cb=None, output_type="pil"):
        noise = sampler.initial_noise(args.seed, 1, (transformer.config.in_channels, lat, lat))
        return ref(prompt, input_images=images, height=side, width=side, max_input_image_size=side,
                   num_inference_steps=n, guidance_scale=args.cfg, img_guidance_scale=args.img_cfg,
                   use_input_image_size_as_output=True, latents=noise, output_type=output_type,
                   callback_on_step_end=cb).images

    def marker(marks):
        def cb(_pipe, i, t, kw):
            marks.append(clock.mark())
            return {}
        return cb

    counted, warm_step = {}, None
    for n in (1, 2):
        marks = []
        with FlopCounterMode(display=False) as fc:
            call(n, marker(marks), output_type="latent")
        clock.sync()
        counted[n] = fc.get_total_flops()
        if n == 2:
            warm_step = clock.seconds(marks[0], marks[1])
    step_flops = counted[2] - counted[1]
    print(f"[diffusers] FLOPs per step {sig(step_flops / 1e12)} T (ours {sig(res['ours_flops_step'] / 1e12)} T); "
          f"a step took {warm_step:.2f} s in warm-up", flush=True)

    # as many steps as the budget allows (the timed call also encodes and decodes: keep 30 s for that)
    left = deadline - time.time() - 30
    n = args.diffusers_steps or args.steps
    n = max(2, min(n, int(left / (warm_step * 1.1))))
    reset_peak(device)
    marks = []
    clock.sync()
    w0 = time.perf_counter()
    m0 = clock.mark()
    out = call(n, marker(marks))
    m1 = clock.mark()
    clock.sync()
    wall = time.perf_counter() - w0
    mem = peak(device)
    per = [clock.seconds(x, y) for x, y in zip(marks, marks[1:])]
    total = clock.seconds(m0, m1)
    first = clock.seconds(m0, marks[0])  # processor + VAE encode + step 1
    tail = clock.seconds(marks[-1], m1)  # decode + postprocess
    per_step = statistics.median(per)
    s50 = total + (args.steps - n) * statistics.fmean(per)
    arr = np.asarray(out[0], dtype=np.float32)
    r = dict(engine="diffusers OmniGenPipeline", steps_run=n, extrapolated=n != args.steps, seconds=total,
             wall_seconds=wall, seconds_50=s50, per_step=per_step, per_step_mean=statistics.fmean(per),
             step1=first, prefill=None, encode=None, decode=tail, **mem, flop_step=step_flops,
             tflop=(counted[1] + (args.steps - 1) * step_flops) / 1e12,
             output_finite=bool(np.isfinite(arr).all()), output_std=float(arr.std()), step_seconds=per)
    r["tflops_per_s"] = r["tflop"] / s50
    r["step_tflops_per_s"] = step_flops / per_step / 1e12
    res["diffusers"] = r
    print(f"[diffusers] {n} steps: {total:.2f} s (wall {wall:.2f}), {per_step:.3f} s/step, first step incl. "
          f"encode {first:.2f} s, decode {tail:.2f} s, peak {fmt(mem['peak_alloc_gib'])} GiB; "
          f"{args.steps}-step equivalent {s50:.1f} s", flush=True)
    del ref
    gc.collect()


# ---------------------------------------------------------------------------------------------------------
def sig(x, n=3):
    """n significant digits (FLOP figures span 1e-3 on the CPU check to 1e3 on a GPU)."""
    return "–" if x is None else f"{x:.{n}g}"


def fmt(x, nd=2):
    if x is None:
        return "–"
    if isinstance(x, float) and (math.isnan(x) or math.isinf(x)):
        return str(x)
    return f"{x:.{nd}f}"


COLUMNS = ["engine", "steps_run", "extrapolated", "seconds", "seconds_50", "per_step", "step1", "prefill",
           "encode", "decode", "peak_alloc_gib", "peak_reserved_gib", "tflop", "tflops_per_s",
           "share_spec", "share_measured", "step_tflops_per_s", "output_finite"]


def table(res: dict, peak_spec: float, peak_meas: float | None) -> tuple[str, list[dict]]:
    rows = []
    for key in ("ours", "diffusers"):
        r = res.get(key)
        if not r:
            continue
        r = dict(r)
        r["share_spec"] = r["tflops_per_s"] / peak_spec
        r["share_measured"] = r["tflops_per_s"] / peak_meas if peak_meas else None
        rows.append(r)
    env = res["env"]
    lines = [f"{env['gpu']} · torch {env['torch']} · diffusers {env.get('diffusers', '?')} · {res['config']} · "
             f"{res['side']}² two-image IVIF, cfg {res['cfg']}, img_cfg {res['img_cfg']}, "
             f"{res['steps']} steps, 3 branches",
             "",
             common.markdown_table(
                 ["engine", "steps run", f"s ({res['steps']} steps)", "s / cached step", "prefill s", "step 1 s",
                  "encode s", "decode s", "peak alloc GiB", "peak reserved GiB", "PFLOP", "TFLOP/s",
                  f"share of {peak_spec:.0f}", f"share of measured {fmt(peak_meas, 0)}"],
                 [(r["engine"], r["steps_run"], fmt(r["seconds_50"]) + (" (extrapolated)" if r["extrapolated"] else ""),
                   fmt(r["per_step"], 3), fmt(r["prefill"], 3), fmt(r["step1"], 3), fmt(r["encode"], 3),
                   fmt(r["decode"], 3), fmt(r["peak_alloc_gib"]), fmt(r["peak_reserved_gib"]), sig(r["tflop"] / 1e3),
                   sig(r["tflops_per_s"]), f"{fmt(100 * r['share_spec'], 1)} %",
                   f"{fmt(None if r['share_measured'] is None else 100 * r['share_measured'], 1)} %") for r in rows])]
    o, d = res.get("ours"), res.get("diffusers")
    if o:
        lines += ["", f"ours: cached step {sig(o['step_tflops_per_s'])} TFLOP/s, prefill "
                      f"{sig(o['prefill_tflops_per_s'])} TFLOP/s, transformer (prefill + steps) "
                      f"{sig(o['transformer_tflops_per_s'])} TFLOP/s; FLOPs per cached step {sig(o['flop_step'] / 1e12)} T, "
                      f"prefill {sig(o['flop_prefill'] / 1e12)} T; prefill = {fmt(o['prefill_over_step'])} "
                      f"cached steps; weights etc. resident {fmt(o['resident_gib'])} GiB; output finite: "
                      f"{o['output_finite']}"]
    if d:
        lines.append(f"diffusers: FLOPs per step {sig(d['flop_step'] / 1e12)} T, {sig(d['step_tflops_per_s'])} TFLOP/s "
                     f"per step; steps run {d['steps_run']}" + (", the rest extrapolated at its mean step time"
                                                                 if d["extrapolated"] else "")
                     + f"; output finite: {d['output_finite']}")
    if o and d:
        lines.append(f"diffusers / ours: {d['seconds_50'] / o['seconds_50']:.2f}× per call, "
                     f"{d['per_step'] / o['per_step']:.2f}× per step, peak memory "
                     f"{fmt(None if not d['peak_alloc_gib'] else d['peak_alloc_gib'] / o['peak_alloc_gib'])}×")
    if res.get("diffusers_error"):
        lines.append(f"diffusers failed: {res['diffusers_error']}")
    for b in res.get("branches", []):
        lines.append(f"engine mode {b['mode']}: {b['steps']} steps {fmt(b['seconds'])} s, "
                     f"{fmt(b['per_step'], 3)} s/step, prefill + step 1 {fmt(b['prefill_plus_step1'], 3)} s, "
                     f"peak {fmt(b['peak_alloc_gib'])} GiB (resident after {fmt(b['resident_gib'])} GiB), "
                     f"max |Δ| vs batched {b['max_abs_delta']:.2e}")
    return "\n".join(lines), rows


def write(out: Path | None, res: dict, peak_spec: float, peak_meas: float | None, final: bool) -> str:
    text, rows = table(res, peak_spec, peak_meas)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(res, indent=1, default=str))
        with open(out / "results.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
            w.writeheader()
            for r in rows:
                w.writerow({k: r.get(k) for k in COLUMNS})
        (out / "table.md").write_text(text + "\n")
    return text


def env_info(device) -> dict:
    env = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
           "date": _dt.date.today().isoformat(), "host_cpus": os.cpu_count()}
    for mod in ("diffusers", "transformers"):
        try:
            env[mod] = __import__(mod).__version__
        except Exception as e:  # report, don't fail
            env[mod] = f"not importable: {e!r}"
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        env.update(gpu=torch.cuda.get_device_name(device), gpu_memory_gib=p.total_memory / GIB,
                   capability=f"{p.major}.{p.minor}", sms=p.multi_processor_count)
    else:
        env["gpu"] = f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    return env


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    common.add_device_args(ap, device="cuda", dtype="bf16", choices=["bf16", "fp16", "fp32"])
    ap.add_argument("--small", action="store_true", help="hidden 256, 4 layers, 256 px, 4 steps (a CPU check)")
    ap.add_argument("--side", type=int, default=None, help="input/working side (1024; --small 256)")
    ap.add_argument("--steps", type=int, default=None, help="50 (--small 4)")
    ap.add_argument("--warmup-steps", type=int, default=2)
    ap.add_argument("--diffusers-steps", type=int, default=0, help="0: as --steps, fewer if the budget says so")
    ap.add_argument("--branch-steps", type=int, default=None, help="steps per engine mode: branches batched / one "
                    "by one, KV cache fp8 / on the CPU, blocks offloaded (0: skip)")
    ap.add_argument("--skip-diffusers", action="store_true")
    ap.add_argument("--cfg", type=float, default=2.0)
    ap.add_argument("--img-cfg", type=float, default=1.6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--budget-s", type=float, default=390, help="whole run; diffusers' steps are cut to fit")
    ap.add_argument("--peak-tflops", type=float, default=H200_SPEC_TFLOPS, help="dense bf16 spec peak")
    ap.add_argument("--out", default=None, help="folder for results.csv / results.json / table.md")
    args = ap.parse_args()
    t_start = time.time()
    deadline = t_start + args.budget_s
    args.side = args.side or (256 if args.small else 1024)
    args.steps = args.steps or (4 if args.small else 50)
    if args.branch_steps is None:
        args.branch_steps = 2 if args.small else 5
    out = Path(args.out) if args.out else None

    from ditfuse_core.devices import DTYPES, resolve_device, resolve_vae_dtype

    device = resolve_device(args.device)
    dtype = DTYPES[args.dtype]
    vae_dtype = resolve_vae_dtype(args.dtype, device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    env = env_info(device)
    print(f"[env] {json.dumps(env)}", flush=True)
    meas = matmul_tflops(device, torch.bfloat16)
    if meas:
        print(f"[env] bf16 8192³ matmul here: {meas:.0f} TFLOP/s (spec {args.peak_tflops:.0f}, "
              f"measured before on H200s ~{H200_MEASURED_TFLOPS:.0f})", flush=True)
    peak_meas = meas or H200_MEASURED_TFLOPS
    res = dict(env=env, side=args.side, steps=args.steps, cfg=args.cfg, img_cfg=args.img_cfg, dtype=args.dtype,
               vae_dtype=str(vae_dtype).replace("torch.", ""), matmul_tflops_here=meas,
               peak_spec_tflops=args.peak_tflops, budget_s=args.budget_s)

    t = time.time()
    transformer = build_transformer(args.small, device, dtype, args.seed)
    vae = build_vae(args.small, device, vae_dtype, args.seed)
    if device.type == "cuda":
        torch.cuda.synchronize()
    c = transformer.config
    res["config"] = (f"{'small' if args.small else 'real OmniGen-v1'} random: hidden {c.hidden_size}, "
                     f"{c.num_layers} layers, {c.num_attention_heads} heads, MLP {c.intermediate_size}, "
                     f"{param_count(transformer) / 1e9:.3f} B params+buffers {args.dtype}; VAE "
                     f"{tuple(vae.config.block_out_channels)} {res['vae_dtype']}")
    res["build_s"] = time.time() - t
    res["weights_gib"] = resident_gib(device)
    print(f"[build] {res['config']} in {res['build_s']:.1f} s; resident {fmt(res['weights_gib'])} GiB", flush=True)
    images, src = common.example_pair(args.side)
    res["images"] = src

    try:
        run_ours(args, device, transformer, vae, images, res, deadline)
        res["ours_flops_step"] = res["flops"]["step"]
    except Exception as e:
        traceback.print_exc()
        res["ours_error"] = repr(e)
    print(write(out, res, args.peak_tflops, peak_meas, final=False), flush=True)

    if not args.skip_diffusers and "ours" in res:
        reset_peak(device)
        try:
            run_diffusers(args, device, transformer, vae, images, res, deadline)
        except Exception as e:
            traceback.print_exc()
            res["diffusers_error"] = repr(e)
    res["total_s"] = time.time() - t_start
    print("\n" + "=" * 100)
    print(write(out, res, args.peak_tflops, peak_meas, final=True))
    print(f"\n(whole script {res['total_s']:.0f} s)")
    if "ours_error" in res:
        sys.exit(1)


if __name__ == "__main__":
    main()

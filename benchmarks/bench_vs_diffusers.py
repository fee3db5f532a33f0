"""Issue #27, benchmark 1: our engine against diffusers' OmniGenPipeline on the same random weights.

    python -m benchmarks.bench_vs_diffusers [--sides 256 512] [--steps 4 50] [--dtypes fp32 bf16] [--out DIR]

The medium random config (hidden 1024, 8 layers, 16 heads, MLP 2048: `ditfuse_core.tiny`, as bench_engine's
`--hidden 1024 --layers 8`) with weights N(0, 0.02) (`--init-std`), ditfuse_core.tiny's VAE, the example IVIF pair resized to side × side, the
authors' schedule (ditfuse_core.reference: t = 0, 1/N, …, 1), cfg 2.0, img_cfg 1.6, three guidance branches,
the same noise, input latents the VAE posterior mean on both sides (as tests/test_engine_parity.py) and the
MFF instruction: diffusers left-pads the branches to the longest, which moves a branch shorter than the
negative prompt by ~1e-3 (the IVIF prompt is; MFF's is longer), a difference of diffusers, not of speed.

Per configuration, in one process, the two calls interleaved (`--repeat` rounds, the order alternating):
seconds per call (images → latents, output_type "latent" for diffusers), seconds per step (median; ours: cached
steps, and the prefill apart), max |Δ| of the latents, and, untimed, the rounding floor: max |Δ| between ours
batched and ours with the branches one by one (the same math; this random model amplifies any fp32 rounding).
Peak RSS: a fresh subprocess per engine that builds the same model and inputs and runs only that engine's call
(`--rss-steps`; the peak comes in the first step); VmHWM from /proc/self/status (the peak resident set; no
weight file is mmapped, so it is the anonymous memory the call needs) and VmRSS before the call.
`--diffusers-max-steps N` runs diffusers for N steps only and extrapolates its call time per step (marked).
Writes vs_diffusers.csv and vs_diffusers.md to --out (default benchmarks/results).
"""
from __future__ import annotations

import argparse
import csv
import datetime as _dt
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from benchmarks import common

PROMPT_TASK = "mff"
INIT_STD = 0.02  # --init-std
RSS: dict = {}  # (engine, side, steps, dtype) → peak_rss()
COLUMNS = ["date", "side", "steps", "dtype", "init_std", "threads", "load_before", "load_after", "ours_call_s", "diffusers_call_s",
           "diffusers_steps_run", "extrapolated", "call_ratio", "ours_step_s", "ours_prefill_s", "diffusers_step_s",
           "step_ratio", "max_abs_delta", "floor_delta", "latent_scale", "ours_peak_rss_mib", "diffusers_peak_rss_mib",
           "ours_base_rss_mib", "diffusers_base_rss_mib"]


def build(side: int, dtype: str):
    """(our pipeline, diffusers' pipeline, images, prompt, noise) on the medium random model."""
    from ditfuse_core import prompts, reference, sampler
    from ditfuse_core.tiny import tiny_transformer, tiny_vae

    model = tiny_transformer(hidden=1024, layers=8, heads=16, intermediate=2048, std=INIT_STD,
                             pos_embed_max_size=max(64, side // 16))
    model = model.to(torch.float32 if dtype == "fp32" else torch.bfloat16)
    vae = tiny_vae()
    pipe = common.random_pipeline(model, vae)
    ref = reference.diffusers_pipeline(model, vae)
    ref.set_progress_bar_config(disable=True)

    def encode_mean(pixel_values, device=None, dtype=None):
        return [vae.encode(p.to(vae.dtype)).latent_dist.mode() * vae.config.scaling_factor for p in pixel_values]

    ref.encode_input_images = encode_mean
    images, _ = common.example_pair(side)
    noise = sampler.initial_noise(0, 1, (4, side // 8, side // 8))
    return pipe, ref, images, prompts.fusion_prompt(PROMPT_TASK), noise


@torch.no_grad()
def run_ours(pipe, images, prompt, noise, steps: int, **engine):
    """(latents, seconds, per-step seconds, prefill seconds): images → latents, the library's own path."""
    from ditfuse_core import sampler

    model = pipe.transformer
    marks, pre = [], []
    prefill = model.prefill

    def timed_prefill(*a, **k):
        t = time.perf_counter()
        out = prefill(*a, **k)
        pre.append(time.perf_counter() - t)
        marks.append(time.perf_counter())
        return out

    model.prefill = timed_prefill
    try:
        t0 = time.perf_counter()
        pix, _ = pipe.preprocess(images, max_side=images[0].size[0])
        cond = pipe.branches(prompt, [pipe.encode(p, sample=False) for p in pix])
        x = sampler.sample(model, [cond], noise, steps=steps, cfg=2.0, img_cfg=1.6,
                           progress=lambda *_: marks.append(time.perf_counter()), **engine)
        sec = time.perf_counter() - t0
    finally:
        del model.prefill
    per = [b - a for a, b in zip(marks, marks[1:])]
    return x, sec, statistics.median(per), sum(pre)


@torch.no_grad()
def run_diffusers(ref, images, prompt, noise, steps: int):
    """(latents, seconds, per-step seconds): OmniGenPipeline, output_type "latent"."""
    marks = []

    def cb(_pipe, i, t, kw):
        marks.append(time.perf_counter())
        return {}

    side = images[0].size[0]
    t0 = time.perf_counter()
    marks.append(t0)
    x = ref(prompt, input_images=images, height=side, width=side, max_input_image_size=side,
            num_inference_steps=steps, guidance_scale=2.0, img_guidance_scale=1.6,
            use_input_image_size_as_output=True, latents=noise.clone(), output_type="latent",
            callback_on_step_end=cb).images
    sec = time.perf_counter() - t0
    per = [b - a for a, b in zip(marks[1:], marks[2:])] or [marks[1] - marks[0]]
    return x, sec, statistics.median(per), statistics.fmean(per)


def _status_kib(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def child(engine: str, side: int, steps: int, dtype: str) -> None:
    """--rss-child: build everything, run only `engine`'s call, print VmRSS before and VmHWM after (MiB)."""
    pipe, ref, images, prompt, noise = build(side, dtype)
    base = _status_kib("VmRSS")
    if engine == "ours":
        run_ours(pipe, images, prompt, noise, steps)
    else:
        run_diffusers(ref, images, prompt, noise, steps)
    print(json.dumps({"base_mib": base / 1024, "peak_mib": _status_kib("VmHWM") / 1024}))


def peak_rss(engine: str, side: int, steps: int, dtype: str) -> dict:
    cmd = [sys.executable, "-m", "benchmarks.bench_vs_diffusers", "--rss-child", engine, "--sides", str(side),
           "--steps", str(steps), "--dtypes", dtype, "--init-std", str(INIT_STD)]
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=common.ROOT, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    global INIT_STD
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sides", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--steps", type=int, nargs="+", default=[4, 50])
    ap.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16"])
    ap.add_argument("--repeat", type=int, default=1, help="interleaved rounds per configuration (median)")
    ap.add_argument("--rss-steps", type=int, default=4, help="steps of the RSS subprocesses (the peak comes in "
                    "the first step; 0: as --steps)")
    ap.add_argument("--diffusers-max-steps", type=int, default=0, help="0: all; else extrapolate per step")
    ap.add_argument("--no-rss", action="store_true")
    ap.add_argument("--init-std", type=float, default=INIT_STD, help="the random weights' N(0, std); 0.02 is a "
                    "trained Phi-3's initializer_range; 0.05 (ditfuse_core.tiny's default) amplifies fp32 rounding "
                    "~100-fold per call at this size, so both engines' latents differ by rounding far above 1e-4")
    ap.add_argument("--out", default=str(common.ROOT / "benchmarks" / "results"))
    ap.add_argument("--rss-child", choices=["ours", "diffusers"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    INIT_STD = args.init_std
    if args.rss_child:
        child(args.rss_child, args.sides[0], args.steps[0], args.dtypes[0])
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for dtype in args.dtypes:
        for side in args.sides:
            for steps in args.steps:
                rows.append(measure(args, side, steps, dtype))
                write(out, rows)
    print(write(out, rows))


def measure(args, side: int, steps: int, dtype: str) -> dict:
    pipe, ref, images, prompt, noise = build(side, dtype)
    d_steps = min(steps, args.diffusers_max_steps or steps)
    run_ours(pipe, images, prompt, noise, 1)  # warm-up
    run_diffusers(ref, images, prompt, noise, 1)
    load = [os.getloadavg()[0]]
    ours, theirs = [], []
    for r in range(args.repeat):
        for engine in (("ours", "diffusers") if r % 2 == 0 else ("diffusers", "ours")):
            if engine == "ours":
                ours.append(run_ours(pipe, images, prompt, noise, steps))
            else:
                theirs.append(run_diffusers(ref, images, prompt, noise, d_steps))
            print(f"[{dtype} {side}px {steps} steps] {engine}: {(ours if engine == 'ours' else theirs)[-1][1]:.1f} s",
                  flush=True)
    load.append(os.getloadavg()[0])
    o_sec = statistics.median(o[1] for o in ours)
    d_sec = statistics.median(d[1] for d in theirs)
    if d_steps < steps:  # the remaining steps at the measured mean step time
        d_sec += (steps - d_steps) * statistics.median(d[3] for d in theirs)
    row = dict(date=_dt.date.today().isoformat(), side=side, steps=steps, dtype=dtype, init_std=INIT_STD,
               threads=torch.get_num_threads(),
               load_before=round(load[0], 2), load_after=round(load[1], 2), ours_call_s=round(o_sec, 3),
               diffusers_call_s=round(d_sec, 3), diffusers_steps_run=d_steps, extrapolated=d_steps < steps,
               call_ratio=round(d_sec / o_sec, 2), ours_step_s=round(statistics.median(o[2] for o in ours), 4),
               ours_prefill_s=round(statistics.median(o[3] for o in ours), 4),
               diffusers_step_s=round(statistics.median(d[2] for d in theirs), 4))
    row["step_ratio"] = round(row["diffusers_step_s"] / row["ours_step_s"], 2)
    if d_steps == steps:
        row["max_abs_delta"] = f"{(ours[-1][0] - theirs[-1][0].float()).abs().max().item():.2e}"
    row["latent_scale"] = round(ours[-1][0].abs().max().item(), 3)
    # the rounding floor: the same computation with the branches one by one (bit for bit the authors' per-branch
    # math, batched differs by fp32 rounding only), amplified by this random model as any other rounding is
    one_by_one = run_ours(pipe, images, prompt, noise, steps, batch_branches=False)[0]
    row["floor_delta"] = f"{(ours[-1][0] - one_by_one).abs().max().item():.2e}"
    if not args.no_rss:
        n = min(args.rss_steps or steps, steps)
        for engine in ("ours", "diffusers"):
            key = (engine, side, n, dtype)
            if key not in RSS:  # the peak does not depend on the number of steps beyond the first
                RSS[key] = peak_rss(engine, side, n, dtype)
            row[f"{engine}_peak_rss_mib"] = round(RSS[key]["peak_mib"])
            row[f"{engine}_base_rss_mib"] = round(RSS[key]["base_mib"])
    print(json.dumps(row), flush=True)
    return row


def write(out: Path, rows: list[dict]) -> str:
    with open(out / "vs_diffusers.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    text = common.markdown_table(
        ["dtype", "side", "steps", "ours s", "diffusers s", "diffusers / ours", "ours s/step", "ours prefill s",
         "diffusers s/step", "max \\|Δ\\| latents", "floor", "peak RSS MiB ours / diffusers", "load"],
        [(r["dtype"], r["side"], r["steps"], r["ours_call_s"],
          f"{r['diffusers_call_s']}" + (" (extrapolated)" if r["extrapolated"] else ""), f"{r['call_ratio']}×",
          r["ours_step_s"], r["ours_prefill_s"], r["diffusers_step_s"], r.get("max_abs_delta", "–"), r["floor_delta"],
          f"{r.get('ours_peak_rss_mib', '–')} / {r.get('diffusers_peak_rss_mib', '–')}",
          f"{r['load_before']}–{r['load_after']}") for r in rows])
    (out / "vs_diffusers.md").write_text(text + "\n")
    return text


if __name__ == "__main__":
    main()

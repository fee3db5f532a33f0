#!/usr/bin/env python
"""Training-side benchmarks for the bundled model.

    python benchmarks/bench_training.py vae-psnr --model ditfuse_core/assets/ditfuse-tiny
        VAE reconstruction PSNR (posterior sampled with seed 0, as the pipeline encodes) on every image of
        shared/data/eval (TNO, RoadScene, Lytro, MEFB; longest side 512, sizes floored to 16).
    python benchmarks/bench_training.py throughput [--device cuda] [--steps 20]
        transformer training steps/s of the ditfuse-tiny recipe on synthetic data.
Prints JSON and a Markdown table row.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402


def vae_psnr(a) -> dict:
    from diffusers import AutoencoderKL

    from ditfuse_core.training.vae import eval_images, eval_psnr

    folder = Path(a.model)
    vae = AutoencoderKL.from_pretrained(str(folder / "vae" if (folder / "vae").is_dir() else folder))
    imgs = eval_images(a.eval, a.max_side)[:: a.stride]
    if not imgs:
        sys.exit("no eval images (shared/data/eval) found")
    t = time.time()
    r = eval_psnr(vae, imgs, sample=True)
    r["seconds"] = round(time.time() - t, 1)
    r["mean_posterior_mean"] = eval_psnr(vae, imgs, sample=False)["mean"] if a.also_mean else None
    print(json.dumps(r, indent=1))
    print("| VAE | " + " | ".join(f"{k} {v:.2f} dB" for k, v in r["by_set"].items()) + f" | all {r['mean']:.2f} dB |")
    return r


def throughput(a) -> dict:
    import numpy as np

    from ditfuse_core import m3
    from ditfuse_core.training import flow, recipes
    from ditfuse_core.training.vae import build_vae
    from ditfuse_core.transformer import DiTFuseTransformer

    dev = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    rng = np.random.default_rng(0)
    tmp = Path("/tmp/ditfuse_bench_src")
    tmp.mkdir(exist_ok=True)
    from PIL import Image

    srcs = []
    for i in range(4):
        p = tmp / f"{i}.png"
        Image.fromarray(rng.integers(0, 256, (320, 320, 3), dtype=np.uint8)).save(p)
        srcs.append(m3.Source(str(p)))
    m3.scan_sources = lambda root=None: srcs  # noqa: E731
    vae = build_vae(recipes.TINY_VAE["f"], recipes.TINY_VAE["latent"])
    model = DiTFuseTransformer(**recipes.tiny_transformer_config())
    cfg = flow.TrainConfig(out="/tmp/ditfuse_bench_run", sizes=[a.size], batch=a.batch, device=dev, workers=0,
                           progress=False, max_steps=10 ** 6, save_every=0)
    tr = flow.FlowTrainer(cfg, transformer=model, vae=vae)
    batches = [flow.make_batch(cfg, k, 0, 1, {}, srcs) for k in range(3)]
    for b in batches[:2]:
        tr.train_step(b)
    if dev.startswith("cuda"):
        torch.cuda.synchronize()
    t = time.time()
    for i in range(a.steps):
        tr.train_step(batches[i % 3])
    if dev.startswith("cuda"):
        torch.cuda.synchronize()
    dt = (time.time() - t) / a.steps
    r = {"device": dev, "batch": a.batch, "size": a.size, "s_per_step": round(dt, 4),
         "samples_per_s": round(a.batch / dt, 1)}
    print(json.dumps(r))
    return r


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("vae-psnr")
    p.add_argument("--model", default=str(ROOT / "ditfuse_core" / "assets" / "ditfuse-tiny"))
    p.add_argument("--eval", default=None, help="shared/data/eval folder")
    p.add_argument("--max-side", type=int, default=512)
    p.add_argument("--stride", type=int, default=1)
    p.add_argument("--also-mean", action="store_true")
    p.add_argument("--threads", type=int, default=None)
    q = sub.add_parser("throughput")
    q.add_argument("--device", default=None)
    q.add_argument("--batch", type=int, default=8)
    q.add_argument("--size", type=int, default=256)
    q.add_argument("--steps", type=int, default=10)
    q.add_argument("--threads", type=int, default=None)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    (vae_psnr if a.cmd == "vae-psnr" else throughput)(a)


if __name__ == "__main__":
    main()

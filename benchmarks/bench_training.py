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


def quick_eval(a) -> dict:
    """A few pairs per task: the model vs averaging on Qabf, SSIM (sum over both sources) and VIF, on gray
    versions at the model's output size (a training sanity check, not the benchmark: use `ditfuse eval`)."""
    import numpy as np
    from PIL import Image

    from ditfuse_core.evaluation import discover_pairs, load_image
    from ditfuse_core.m3 import default_data_root
    from ditfuse_core.metrics.convert import to_gray
    from ditfuse_core.metrics.qabf import qabf
    from ditfuse_core.metrics.ssim import ssim_sum
    from ditfuse_core.metrics.vif import vif
    from ditfuse_core.pipeline import DiTFusePipeline

    pipe = DiTFusePipeline.from_pretrained(a.model)
    root = Path(a.eval) if a.eval else default_data_root() / "eval"
    sets = {"ivif": root / "ivif" / "tno", "mff": root / "mff" / "lytro", "mef": root / "mef" / "mefb"}
    res = {}
    for task, folder in sets.items():
        rows = []
        for pr in discover_pairs(task, folder)[: a.n]:
            i1, i2 = load_image(pr.image1), load_image(pr.image2)
            p1 = Image.fromarray(i1).convert("RGB")
            p2 = Image.fromarray(i2).convert("RGB")
            s = a.max_side / max(p1.size)
            if s < 1:
                size = (int(p1.size[0] * s) // 16 * 16, int(p1.size[1] * s) // 16 * 16)
                p1, p2 = p1.resize(size, Image.BICUBIC), p2.resize(size, Image.BICUBIC)
            t = time.time()
            out = pipe.fuse(p1, p2, task=task, steps=a.steps, seed=0, max_side=a.max_side)[0]
            dt = time.time() - t
            g1, g2 = to_gray(np.asarray(p1)), to_gray(np.asarray(p2))
            gf = to_gray(np.asarray(out.convert("RGB")))
            ga = (g1 + g2) / 2
            rows.append({"qabf": qabf(g1, g2, gf), "ssim": ssim_sum(g1, g2, gf), "vif": vif(g1, g2, gf),
                         "qabf_avg": qabf(g1, g2, ga), "ssim_avg": ssim_sum(g1, g2, ga), "vif_avg": vif(g1, g2, ga),
                         "seconds": dt})
            if a.save:
                Path(a.save).mkdir(parents=True, exist_ok=True)
                sheet = Image.new("RGB", (p1.size[0] * 3, p1.size[1]))
                for j, im in enumerate((p1, p2, out.convert("RGB").resize(p1.size))):
                    sheet.paste(im, (j * p1.size[0], 0))
                sheet.save(Path(a.save) / f"{task}_{pr.name}.jpg", quality=90)
        res[task] = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
        print(task, json.dumps({k: round(v, 4) for k, v in res[task].items()}), flush=True)
    return res


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
    r = sub.add_parser("quick-eval")
    r.add_argument("--model", default=None)
    r.add_argument("--eval", default=None)
    r.add_argument("--n", type=int, default=3)
    r.add_argument("--steps", type=int, default=None)
    r.add_argument("--max-side", type=int, default=256)
    r.add_argument("--save", default=None, help="folder for input/input/output sheets")
    r.add_argument("--threads", type=int, default=None)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    {"vae-psnr": vae_psnr, "throughput": throughput, "quick-eval": quick_eval}[a.cmd](a)


if __name__ == "__main__":
    main()

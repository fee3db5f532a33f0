"""Wall time of one 512×512 fusion with a model folder's default settings (default: the bundled model),
split into VAE encode, sampling and decode; median of --repeat runs after one warm-up.

    python benchmarks/bench_fuse_speed.py [--model FOLDER] [--size 512] [--threads N] [--device cuda] [--dtype auto]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="auto")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    from PIL import Image

    from ditfuse_core import vae as vae_mod
    from ditfuse_core.pipeline import DiTFusePipeline

    t = time.time()
    pipe = DiTFusePipeline.from_pretrained(a.model, device=a.device, dtype=a.dtype)
    sync = torch.cuda.synchronize if pipe.device.type == "cuda" else (lambda: None)
    load_s = time.time() - t
    ex = ROOT / "example_images"
    pics = [ex / "ivif_1_visible.png", ex / "ivif_2_infrared.png"]
    pics = pics if all(p.is_file() for p in pics) else []
    if len(pics) == 2:
        im1, im2 = (Image.open(p).convert("RGB").resize((a.size, a.size), Image.BICUBIC) for p in pics)
    else:
        rng = np.random.default_rng(0)
        im1, im2 = (Image.fromarray(rng.integers(0, 256, (a.size, a.size, 3), dtype=np.uint8)) for _ in range(2))

    # time the stages by wrapping the VAE calls the pipeline makes
    stage = {"encode": 0.0, "decode": 0.0}
    enc, dec = vae_mod.encode, vae_mod.decode

    def timed(name, fn):
        def run(*args, **kw):
            sync()
            t0 = time.perf_counter()
            out = fn(*args, **kw)
            sync()
            stage[name] += time.perf_counter() - t0
            return out
        return run

    vae_mod.encode, vae_mod.decode = timed("encode", enc), timed("decode", dec)
    try:
        pipe.fuse(im1, im2, task="ivif", seed=0)  # warm-up
        rows = []
        for _ in range(a.repeat):
            stage.update(encode=0.0, decode=0.0)
            sync()
            t0 = time.perf_counter()
            pipe.fuse(im1, im2, task="ivif", seed=0)
            sync()
            total = time.perf_counter() - t0
            rows.append((total, stage["encode"], stage["decode"]))
    finally:
        vae_mod.encode, vae_mod.decode = enc, dec
    total, e, d = (statistics.median(r[i] for r in rows) for i in range(3))
    steps = pipe.defaults.get("steps")
    print(f"\nmodel {pipe.name}: {a.size}×{a.size} pair, {steps} steps, cfg {pipe.defaults.get('cfg')}, "
          f"img_cfg {pipe.defaults.get('img_cfg')}; {pipe.device} {str(pipe.dtype).replace('torch.', '')}"
          + (f" ({torch.cuda.get_device_name(pipe.device)})" if pipe.device.type == "cuda" else "")
          + f"; torch threads {torch.get_num_threads()}; load {load_s:.1f} s\n")
    print("| stage | s |\n| --- | ---: |")
    for name, v in (("VAE encode (2 images)", e), ("sampling", total - e - d), ("VAE decode", d), ("total", total)):
        print(f"| {name} | {v:.2f} |")
    print(json.dumps({"size": a.size, "steps": steps, "threads": torch.get_num_threads(), "total_s": round(total, 2),
                      "encode_s": round(e, 2), "decode_s": round(d, 2)}))


if __name__ == "__main__":
    main()

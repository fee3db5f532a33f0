"""Wall time of one fusion of the example pair at --size (default 512×512) with a model folder's default
settings (default: the bundled model), split into VAE encode, sampling and decode; median of --repeat runs
after one warm-up.

    python -m benchmarks.bench_fuse_speed [--model FOLDER] [--size 512] [--repeat 3] [--threads N] [--device cuda] [--dtype auto]
"""
from __future__ import annotations

import argparse
import json
import statistics

import torch

from benchmarks import common
from ditfuse_core import vae as vae_mod
from ditfuse_core.pipeline import DiTFusePipeline


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    common.add_device_args(ap, dtype="auto", choices=None)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)

    pipe, load_s = common.timed(lambda: DiTFusePipeline.from_pretrained(a.model, device=a.device, dtype=a.dtype))
    (im1, im2), src = common.example_pair(a.size)

    # time the stages by wrapping the VAE calls the pipeline makes
    stage = {"encode": 0.0, "decode": 0.0}
    enc, dec = vae_mod.encode, vae_mod.decode

    def stage_timed(name, fn):
        def run(*args, **kw):
            out, sec = common.timed(lambda: fn(*args, **kw), pipe.device)
            stage[name] += sec
            return out
        return run

    vae_mod.encode, vae_mod.decode = stage_timed("encode", enc), stage_timed("decode", dec)
    try:
        pipe.fuse(im1, im2, task="ivif", seed=0)  # warm-up
        rows = []
        for _ in range(a.repeat):
            stage.update(encode=0.0, decode=0.0)
            _, total = common.timed(lambda: pipe.fuse(im1, im2, task="ivif", seed=0), pipe.device)
            rows.append((total, stage["encode"], stage["decode"]))
    finally:
        vae_mod.encode, vae_mod.decode = enc, dec
    total, e, d = (statistics.median(r[i] for r in rows) for i in range(3))
    steps = pipe.defaults.get("steps")
    print(f"\nmodel {pipe.name}: {a.size}×{a.size} {src}, {steps} step{'' if steps == 1 else 's'}, "
          f"cfg {pipe.defaults.get('cfg')}, "
          f"img_cfg {pipe.defaults.get('img_cfg')}; {pipe.device} {str(pipe.dtype).replace('torch.', '')}"
          + (f" ({torch.cuda.get_device_name(pipe.device)})" if pipe.device.type == "cuda" else "")
          + f"; torch threads {torch.get_num_threads()}; load {load_s:.1f} s; median of {a.repeat}\n")
    print(common.markdown_table(["stage", "s"], [(name, f"{v:.2f}") for name, v in (
        ("VAE encode (2 images)", e), ("sampling", total - e - d), ("VAE decode", d), ("total", total))]))
    print(json.dumps({"size": a.size, "steps": steps, "threads": torch.get_num_threads(), "total_s": round(total, 2),
                      "encode_s": round(e, 2), "decode_s": round(d, 2)}))


if __name__ == "__main__":
    main()

"""Fit the bundled model's LinearAutoencoder: principal components of f×f pixel blocks of training crops.

    python -m tools.bundled.autoencoder_fit --out out/lae [--crops 2000 --upscale 1.7,2.6]

Crops come from the M3 sources (a fraction replaced by M3-degraded inputs, as for the VAE) enlarged by
U[lo, hi] with LANCZOS: the densities the bundled model's working size (inputs enlarged ≥ 2×, up to its
2048 px position table) gives. The covariance of the blocks is accumulated in float64 and its leading
eigenvectors kept; ``scaling_factor`` = 1 / std of the latents, as for the VAE. Seconds on a CPU.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ditfuse_core.linear_autoencoder import LinearAutoencoder
from ditfuse_core.training.data import ImageCrops
from ditfuse_core.training.vae_trainer import eval_images, eval_psnr


@torch.no_grad()
def fit_linear_autoencoder(sources, factor: int = 4, latent_channels: int = 16, crops: int = 2000,
                           size: int = 128, upscale: tuple[float, float] = (1.7, 2.6), p_degraded: float = 0.3,
                           seed: int = 0) -> tuple[LinearAutoencoder, dict]:
    t0 = time.time()
    it = iter(ImageCrops(sources, size=size, seed=seed, p_degraded=p_degraded, upscale=upscale))
    n = 3 * factor * factor
    s1, s2, count = torch.zeros(n, dtype=torch.float64), torch.zeros(n, n, dtype=torch.float64), 0
    for _ in range(crops):
        blocks = F.unfold(next(it)[None].double(), factor, stride=factor)[0].T  # [blocks, (c, row, col)]
        s1 += blocks.sum(0)
        s2 += blocks.T @ blocks
        count += blocks.shape[0]
    mean = s1 / count
    cov = s2 / count - torch.outer(mean, mean)
    evals, evecs = torch.linalg.eigh(cov)
    evals, evecs = evals.flip(0), evecs.flip(1)
    kept = float(evals[:latent_channels].sum() / evals.sum())
    ae = LinearAutoencoder(factor=factor, latent_channels=latent_channels)
    ae.basis.copy_(evecs[:, :latent_channels].T.float())
    ae.mean.copy_(mean.float())
    # latents have variance evals[:C] per channel: scale them to unit std overall, as the VAE's
    scale = float(1.0 / evals[:latent_channels].mean().sqrt())
    ae.register_to_config(scaling_factor=scale)
    record = {"kind": "linear (principal components of pixel blocks)", "f": factor,
              "latent_channels": latent_channels, "params": n * (latent_channels + 1), "crops": crops,
              "crop": size, "upscale": list(upscale), "p_degraded": p_degraded, "seed": seed,
              "blocks": count, "variance_kept": kept, "scaling_factor": scale,
              "wall_s": round(time.time() - t0, 1), "device": "cpu"}
    return ae, record


def fit_and_save(out, sources, eval_stride: int = 1, **fit) -> dict:
    """fit_linear_autoencoder, PSNR on every eval_stride-th eval image (max side 512, not enlarged; 0: none;
    none either where shared/data/eval is absent), then OUT/ in diffusers layout + train_log.json."""
    ae, rec = fit_linear_autoencoder(sources, **fit)
    images = eval_images()[::eval_stride] if eval_stride > 0 else []
    if images:
        rec["eval_psnr"] = eval_psnr(ae, images)
    out = Path(out)
    ae.save_pretrained(str(out), safe_serialization=True)
    (out / "train_log.json").write_text(json.dumps(rec, indent=1))
    return rec


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--data", default=None, help="shared/data (default) or a pack folder")
    ap.add_argument("--f", type=int, default=4)
    ap.add_argument("--latent", type=int, default=16)
    ap.add_argument("--crops", type=int, default=2000)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--upscale", default="1.7,2.6", help="lo,hi: enlarge each crop by U[lo, hi]")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-stride", type=int, default=1, help="PSNR on every k-th eval image (0: none)")
    a = ap.parse_args(argv)
    from ditfuse_core.training import m3

    rec = fit_and_save(a.out, m3.scan_sources(a.data), a.eval_stride, factor=a.f, latent_channels=a.latent,
                       crops=a.crops, size=a.size, upscale=tuple(float(v) for v in a.upscale.split(",")),
                       seed=a.seed)
    print(json.dumps(rec, indent=1))


if __name__ == "__main__":
    main()

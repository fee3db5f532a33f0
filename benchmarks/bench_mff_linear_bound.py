"""How far above averaging can *any* linear filter of the average get on Qabf, SSIM and VIF at once?

Why: the bundled model's output is a linear map of the latent average, and on Lytro it beats averaging on
Qabf and VIF but not SSIM. Earlier probes tried one filter family at a time (unsharp masking, one
difference of Gaussians). Here a filter is any gain per octave band of the decoded latent average at the
working size, F = c + Σ aᵢ·(G_σᵢ − G_σᵢ₊₁)(c), σ = 0, 1, 2, … 32 working px (G_0 = identity): the rotation-
invariant linear filters a cross-token detail map could compute. The metrics (minus the half-up averaging
baseline, through the full data path: working size, autoencoder, restore, uint8) are sampled at random
gains, fitted by a quadratic surface, and the surface's best SSIM is found under Qabf/VIF floors; the
printed Δ at those gains are measured again, not predicted.

    python benchmarks/bench_mff_linear_bound.py [--set mff/lytro] [--pairs 20] [--samples 50]
    python benchmarks/bench_mff_linear_bound.py --synthetic 24     # held out: multi-focus pairs of the training
                                                                   # pack (m3, seed 123, 512 px), not eval pairs
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from eval_subsets import KEY, eval_root, spaced_pairs  # noqa: E402
from scipy.ndimage import gaussian_filter  # noqa: E402
from scipy.optimize import minimize  # noqa: E402

from ditfuse_core.training.focus_map import BAND_SIGMAS as SIGMAS  # noqa: E402  (the bundled filter's bands)

FLOORS = [(0.0, 0.0), (0.002, 0.0007), (0.005, 0.0017), (0.01, 0.0033)]  # (Qabf, VIF) margins asked for


def quad_features(a: np.ndarray) -> np.ndarray:
    a = np.atleast_2d(a)
    k = a.shape[1]
    cols = [np.ones(len(a))] + [a[:, i] for i in range(k)] + [a[:, i] * a[:, j] for i in range(k) for j in range(i, k)]
    return np.stack(cols, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", default="mff/lytro")
    ap.add_argument("--pairs", type=int, default=20)
    ap.add_argument("--samples", type=int, default=50, help="random gain vectors, U[-0.25, 0.25] per band")
    ap.add_argument("--synthetic", type=int, default=0, help="use this many synthetic multi-focus pairs instead")
    ap.add_argument("--eval", default=None, help="shared/data/eval folder")
    a = ap.parse_args()
    from PIL import Image

    from ditfuse_core import baselines, evaluation, images as imgs
    from ditfuse_core.metrics import compute_metrics
    from ditfuse_core.pipeline import DiTFusePipeline

    if a.synthetic:
        from ditfuse_core import m3

        gen = m3.M3Generator(seed=123, size=512)
        task, name = "mff", "synthetic multi-focus pairs (m3, seed 123, 512 px)"
        pairs = [tuple(np.asarray(x) for x in gen.sample(i, task).inputs[:2]) for i in range(a.synthetic)]
    else:
        root = eval_root(a.eval)
        if root is None:
            return
        task, name = a.set.split("/")[0], a.set
        pairs = [(evaluation.load_image(p.image1), evaluation.load_image(p.image2))
                 for p in spaced_pairs(task, root / a.set, a.pairs)]
    torch.set_grad_enabled(False)
    pipe = DiTFusePipeline.from_pretrained(device="cpu")
    t0 = time.time()
    data = []
    for g1, g2 in pairs:
        p1, p2 = Image.fromarray(g1).convert("RGB"), Image.fromarray(g2).convert("RGB")
        (q1, q2), _ = pipe.preprocess([p1, p2])
        c = pipe.decode((pipe.encode(q1, sample=False) + pipe.encode(q2, sample=False)) / 2)[0].double().numpy()
        blurred = [c if s == 0 else gaussian_filter(c, (0, s, s)) for s in SIGMAS]
        bands = [torch.from_numpy(blurred[i] - blurred[i + 1]).float() for i in range(len(SIGMAS) - 1)]
        base = compute_metrics(g1, g2, baselines.fuse("average", g1, g2), list(KEY), task)
        data.append((g1, g2, p1.size, torch.from_numpy(c).float(), bands, np.array([base[k] for k in KEY])))

    def delta(gains) -> np.ndarray:
        out = []
        for g1, g2, size, c, bands, base in data:
            f = imgs.restore((c + sum(float(x) * b for x, b in zip(gains, bands)))[None], size)[0].numpy() * 255
            s = compute_metrics(g1, g2, np.clip(np.round(f), 0, 255).astype(np.uint8), list(KEY), task)
            out.append(np.array([s[k] for k in KEY]) - base)
        return np.mean(out, 0)

    k = len(SIGMAS) - 1
    rng = np.random.default_rng(0)
    gains = np.array([np.zeros(k)] + [rng.uniform(-0.25, 0.25, k) for _ in range(a.samples)])
    deltas = np.array([delta(g) for g in gains])
    coef = np.linalg.lstsq(quad_features(gains), deltas, rcond=None)[0]
    rmse = np.sqrt(((quad_features(gains) @ coef - deltas) ** 2).mean(0))
    surface = lambda g: quad_features(g)[0] @ coef  # noqa: E731

    bands = ", ".join(f"{SIGMAS[i]}–{SIGMAS[i + 1]}" for i in range(k))
    print(f"**{name}** ({len(data)} pairs, {len(gains)} samples; bands σ {bands} working px; surface RMSE "
          f"Qabf {rmse[0]:.4f}, SSIM {rmse[1]:.5f}, VIF {rmse[2]:.4f})\n")
    print("| floors (Δ Qabf, Δ VIF ≥) | band gains | Δ Qabf | Δ SSIM | Δ VIF | surface Δ SSIM |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    d0 = deltas[0]
    print(f"| none (c alone) | 0 | {d0[0]:+.4f} | {d0[1]:+.5f} | {d0[2]:+.4f} | |")
    for qf, vf in FLOORS:
        best = None
        for seed in range(40):
            x0 = np.random.default_rng(seed).uniform(-0.2, 0.2, k)
            r = minimize(lambda g: -surface(g)[1], x0, method="SLSQP",
                         constraints=[{"type": "ineq", "fun": lambda g: surface(g)[0] - qf},
                                      {"type": "ineq", "fun": lambda g: surface(g)[2] - vf},
                                      {"type": "ineq", "fun": lambda g: 0.3 - np.abs(g)}])
            if r.success and (best is None or r.fun < best.fun):
                best = r
        m = delta(best.x)
        print(f"| {qf:+.3f}, {vf:+.4f} | {' '.join(f'{x:+.2f}' for x in best.x)} | {m[0]:+.4f} | {m[1]:+.5f} "
              f"| {m[2]:+.4f} | {surface(best.x)[1]:+.5f} |")
    print(f"\n{time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()

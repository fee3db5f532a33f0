"""Can a local pixel rule beat averaging on Qabf, SSIM and VIF at once for multi-focus pairs?

Why: the bundled model beats averaging on all three metrics for IVIF and MEF, and on Lytro on Qabf and VIF
but not SSIM. Sharpening (what the model adds to the average) costs SSIM there; this prints where other
families of local rules land, computed in pixels from the two sources (no autoencoder, so each is the best
case of a model that would compute it), beside the bundled model:
  sharper lean   F = avg + β·s·(A − B)/2, s = (e_A − e_B)/(e_A + e_B), e = local high-pass energy
  SSIM-optimal   per SSIM window, the combination α·A + β·B (α, β ∈ [0, 1.2]) maximising SSIM(A,F) + SSIM(B,F)
                 from the window's statistics; weights smoothed (σ 4 px), F = avg + y·(that − avg)
  edge unsharp   avg + m·USM(avg), m = (source gradient / 200)² clipped to 1; USM σ 4 px, amount 0.1 (the
                 bundled detail setting at the input's size)
  SSIM gain      avg + (k − 1)·(avg − Gσ3(avg)): the average's detail scaled by the gain k ∈ [0.7, 1.8] that
                 maximises SSIM's contrast-structure sum for F = k·avg, from the sources' statistics in each
                 SSIM window (k smoothed σ 2 px) or from their means over each 8 px block (k smoothed σ 4 px):
                 the per-token form a transformer could compute
Rules are rounded half to even like any float image (`eval_subsets.add_scores`); the averaging baseline
rounds half up, which alone is worth +0.00025 SSIM on Lytro (both average rows are printed).

    python benchmarks/bench_mff_rules.py [--pairs 20] [--no-model] [--set mef/mefb]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import numpy as np  # noqa: E402
from eval_subsets import add_scores, delta_table, eval_root, spaced_pairs  # noqa: E402
from scipy.ndimage import gaussian_filter, sobel  # noqa: E402

C2 = (0.03 * 255) ** 2  # SSIM's contrast constant
GRID = np.linspace(0.0, 1.2, 13)
GAINS = np.linspace(0.7, 1.8, 23)


def _smooth(x: np.ndarray, s: float) -> np.ndarray:
    return gaussian_filter(x, (s, s, 0)[: x.ndim])


def sharper_lean(a, b, ga, gb) -> np.ndarray:
    """s·(A − B)/2: positive toward the source with more local high-pass energy."""
    ea = gaussian_filter((ga - gaussian_filter(ga, 1.0)) ** 2, 2.0)
    eb = gaussian_filter((gb - gaussian_filter(gb, 1.0)) ** 2, 2.0)
    return ((ea - eb) / (ea + eb + 1e-3))[..., None] * (a - b) / 2


def window_stats(ga, gb, sigma: float = 1.5) -> list[np.ndarray]:
    """Variances of A and B and their covariance in SSIM's Gaussian windows."""
    ma, mb = gaussian_filter(ga, sigma), gaussian_filter(gb, sigma)
    return [gaussian_filter(ga * ga, sigma) - ma * ma, gaussian_filter(gb * gb, sigma) - mb * mb,
            gaussian_filter(ga * gb, sigma) - ma * mb]


def ssim_optimal(a, b, stats, avg) -> np.ndarray:
    """Per-window α·A + β·B maximising the SSIM contrast-structure sum (grid search), minus the average;
    stats = `window_stats` of the pair."""
    va, vb, cab = stats
    best = np.full(va.shape, -np.inf)
    wa, wb = np.zeros_like(va), np.zeros_like(va)
    for al in GRID:
        for be in GRID:
            vf = al * al * va + be * be * vb + 2 * al * be * cab
            s = (2 * (al * va + be * cab) + C2) / (va + vf + C2) + (2 * (al * cab + be * vb) + C2) / (vb + vf + C2)
            m = s > best
            best[m], wa[m], wb[m] = s[m], al, be
    wa, wb = gaussian_filter(wa, 4.0)[..., None], gaussian_filter(wb, 4.0)[..., None]
    return wa * a + wb * b + (1 - wa - wb) * _smooth(avg, 1.5) - avg


def edge_unsharp(ga, gb, avg) -> np.ndarray:
    grad = lambda x: np.hypot(sobel(x, 0), sobel(x, 1))  # noqa: E731
    m = np.clip(gaussian_filter(np.maximum(grad(ga), grad(gb)), 1.0) / 200.0, 0, 1) ** 2
    return m[..., None] * 0.1 * (avg - _smooth(avg, 4.0))


def best_gain(va, vb, cab) -> np.ndarray:
    """argmax over GAINS of SSIM's contrast-structure sum cs(A,F) + cs(B,F) for F = k·(A + B)/2, given the
    variances of A and B and their covariance (averaging loses contrast where the sources differ; where one
    source only blurs the other, less of the sharp one's detail scores higher)."""
    best, gain = np.full(va.shape, -np.inf), np.ones(va.shape)
    vavg = (va + vb + 2 * cab) / 4
    for k in GAINS:
        vf = k * k * vavg
        s = (k * (va + cab) + C2) / (va + vf + C2) + (k * (vb + cab) + C2) / (vb + vf + C2)
        m = s > best
        best[m], gain[m] = s[m], k
    return gain


def block_mean(x: np.ndarray, b: int) -> np.ndarray:
    h, w = -(-x.shape[0] // b), -(-x.shape[1] // b)
    x = np.pad(x, ((0, h * b - x.shape[0]), (0, w * b - x.shape[1])), mode="edge")
    return x.reshape(h, b, w, b).mean((1, 3))


def block_spread(x: np.ndarray, b: int, shape) -> np.ndarray:
    """Each block value over its b × b pixels, cropped to `shape` (the inverse layout of `block_mean`)."""
    return np.kron(x, np.ones((b, b)))[: shape[0], : shape[1]]


def ssim_gain(stats, avg, block: int | None = None) -> np.ndarray:
    """(k − 1)·band(avg), k from each SSIM window's statistics (`window_stats`; k smoothed σ 2 px) or from
    their means over b×b blocks (smoothed σ 4 px)."""
    if block is None:
        k = gaussian_filter(best_gain(*stats), 2.0)
    else:
        k = best_gain(*(block_mean(x, block) for x in stats))
        k = gaussian_filter(block_spread(k, block, avg.shape), 4.0)
    return (k[..., None] - 1) * (avg - _smooth(avg, 3.0))


def _rgb(x: np.ndarray) -> np.ndarray:
    return np.repeat(x[..., None], 3, 2) if x.ndim == 2 else x


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=20, help="Lytro pairs, evenly spaced")
    ap.add_argument("--no-model", action="store_true", help="skip the bundled model's row")
    ap.add_argument("--eval", default=None, help="shared/data/eval folder")
    ap.add_argument("--set", default="mff/lytro", help="eval set (task/name); the rules are meant for mff")
    a = ap.parse_args()
    from ditfuse_core import baselines, evaluation

    root = eval_root(a.eval)
    if root is None:
        return
    pipe = None
    if not a.no_model:
        from PIL import Image

        from ditfuse_core.pipeline import DiTFusePipeline

        pipe = DiTFusePipeline.from_pretrained(device="cpu")
    t0 = time.time()
    task = a.set.split("/")[0]
    pairs = spaced_pairs(task, root / a.set, a.pairs)
    rows: dict[str, list] = {}
    for pair in pairs:
        i1, i2 = evaluation.load_image(pair.image1), evaluation.load_image(pair.image2)
        A, B = _rgb(i1).astype(np.float64), _rgb(i2).astype(np.float64)
        ga, gb = A.mean(-1), B.mean(-1)
        avg = (A + B) / 2
        stats = window_stats(ga, gb)
        lean, opt, edge = sharper_lean(A, B, ga, gb), ssim_optimal(A, B, stats, avg), edge_unsharp(ga, gb, avg)
        fused = {"average (baseline)": baselines.fuse("average", i1, i2), "average, rounded half to even": avg}
        if pipe is not None:
            out = pipe.fuse(Image.fromarray(i1), Image.fromarray(i2), task=task, seed=0)[0]
            fused["bundled model"] = np.asarray(out.convert("RGB"))
        fused.update({f"sharper lean β {bt}": avg + bt * lean for bt in (0.1, 0.2)})
        fused.update({f"SSIM-optimal y {y}": avg + y * opt for y in (0.5, 1.0)})
        fused["edge unsharp"] = avg + edge
        fused.update({f"edge unsharp + SSIM-optimal y {y}": avg + edge + y * opt for y in (0.1, 0.2)})
        fused["SSIM gain (per window)"] = avg + ssim_gain(stats, avg)
        fused["SSIM gain (per 8 px block)"] = avg + ssim_gain(stats, avg, block=8)
        for name, f in fused.items():
            add_scores(rows, name, task, i1, i2, f)
    print(f"**{a.set}** ({len(pairs)} pairs; Δ = difference to the averaging baseline, which rounds half up)\n")
    print(delta_table(rows, "average (baseline)"))
    print(f"\n{time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()

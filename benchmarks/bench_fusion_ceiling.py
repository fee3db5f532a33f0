"""Where the bundled model's gap to plain averaging comes from, and how much room there is above averaging.

Why: the model issue asks the bundled model to beat averaging on Qabf, SSIM and VIF. This prints, per eval
set, averaging done in pixels, after the pipeline's resampling alone, and through the VAE (mean of the two
reconstructions; decoded latent average = what the construction outputs without a detail map) and the
model itself (the pipeline with its defaults), beside probes of the room above averaging: a contrast-matched
average in pixels (SSIM's own optimum direction: local contrast raised to the sources' RMS contrast), the
unsharp-masked pixel average (what the bundled model's detail map imitates in latent space) and a soft
per-token selection of the more detailed input in latent space (what an attention head can do; also with
the tokens' means averaged, so brightness stays smooth), and the classical baselines.

    python benchmarks/bench_fusion_ceiling.py [--pairs 5] [--model FOLDER] [--beta 0.1]
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
import torch.nn.functional as F  # noqa: E402
from PIL import Image  # noqa: E402
from eval_subsets import SETS, add_scores, delta_table, eval_root, spaced_pairs  # noqa: E402
from scipy import ndimage  # noqa: E402


def contrast_matched_average(a: np.ndarray, b: np.ndarray, sigma: float = 1.5, max_gain: float = 2.0):
    """Average whose local contrast (Gaussian window as SSIM's) is raised to the sources' RMS contrast:
    SSIM's structure term ignores the fused image's local scale, its contrast term wants it near the
    sources', and averaging loses contrast wherever the sources disagree."""
    blur = lambda x: ndimage.gaussian_filter(x, (sigma, sigma, 0))  # noqa: E731
    var = lambda x: np.maximum(blur(x * x) - blur(x) ** 2, 0).mean(2, keepdims=True)  # noqa: E731
    f = (a + b) / 2
    mu = blur(f)
    gain = np.clip((np.sqrt((var(a) + var(b)) / 2) + 1e-3) / (np.sqrt(var(f)) + 1e-3), 1.0, max_gain)
    return np.clip(mu + (f - mu) * gain, 0, 255)


def token_split(z: torch.Tensor, p: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per token (p × p latent pixels): its per-channel mean, the deviation from it, and that deviation's
    energy (sum of squares, spread over the token)."""
    m = F.interpolate(F.avg_pool2d(z, p), scale_factor=p, mode="nearest")
    d = z - m
    e = F.avg_pool2d((d * d).sum(1, keepdim=True), p) * p * p
    return m, d, F.interpolate(e, scale_factor=p, mode="nearest")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=5, help="pairs per set, evenly spaced")
    ap.add_argument("--model", default=None)
    ap.add_argument("--beta", type=float, default=0.1, help="selection sharpness: w = sigmoid(beta·Δdetail)")
    ap.add_argument("--eval", default=None, help="shared/data/eval folder")
    a = ap.parse_args()
    from ditfuse_core import baselines, evaluation, images as imgs
    from ditfuse_core.training.detail_map import unsharp
    from ditfuse_core.pipeline import DiTFusePipeline

    root = eval_root(a.eval)
    if root is None:
        return
    pipe = DiTFusePipeline.from_pretrained(a.model)
    patch = pipe.transformer.config.patch_size
    t0 = time.time()
    print(f"model {pipe.name}, max side {pipe.defaults['max_side']}, min scale {pipe.defaults.get('min_scale')}, "
          f"{a.pairs} pairs per set; Qabf, SSIM (mean of the two), "
          "VIF (sum), gray 0-255; Δ = difference to average (pixels)\n")
    for task, sub in SETS:
        pairs = spaced_pairs(task, root / sub, a.pairs)
        vals: dict[str, list] = {}
        for pair in pairs:
            g1, g2 = evaluation.load_image(pair.image1), evaluation.load_image(pair.image2)
            p1, p2 = Image.fromarray(g1).convert("RGB"), Image.fromarray(g2).convert("RGB")
            x1, x2 = np.asarray(p1, np.float64), np.asarray(p2, np.float64)
            size = p1.size
            back = lambda pix: (imgs.restore(pix, size)[0].numpy() * 255)  # noqa: E731
            (q1, q2), _ = pipe.preprocess([p1, p2])
            z1, z2 = pipe.encode(q1, sample=False), pipe.encode(q2, sample=False)
            (mean1, det1, e1), (mean2, det2, e2) = token_split(z1, patch), token_split(z2, patch)
            w = torch.sigmoid(a.beta * (e1 - e2))
            fused = {
                "average (pixels)": baselines.fuse("average", g1, g2),  # as `ditfuse eval` averages
                "average, pipeline resampling only": back((q1 + q2) / 2),
                "VAE: mean of the two reconstructions": back((pipe.decode(z1) + pipe.decode(z2)) / 2),
                "VAE: decoded latent average (the construction without a detail map)": back(pipe.decode((z1 + z2) / 2)),
                "the model (pipeline, its defaults)":
                    np.asarray(pipe.fuse(p1, p2, task=task, seed=0)[0].convert("RGB"), np.float64),
                "probe: contrast-matched average (pixels)": contrast_matched_average(x1, x2),
                "probe: unsharp-masked average (pixels; σ 2, amount 0.15)": unsharp((x1 + x2) / 2, 2.0, 0.15),
                f"probe: latent token selection (beta {a.beta:g})": back(pipe.decode(w * z1 + (1 - w) * z2)),
                f"probe: latent detail selection, token means averaged (beta {a.beta:g})":
                    back(pipe.decode((mean1 + mean2) / 2 + w * det1 + (1 - w) * det2)),
                **{m: baselines.fuse(m, g1, g2) for m in ("gff", "lp", "mertens")},
            }
            for r, f in fused.items():
                add_scores(vals, r, task, g1, g2, f)
        print(f"**{sub}** ({len(pairs)} pairs)\n")
        print(delta_table(vals, "average (pixels)") + "\n", flush=True)
    print(f"{time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()

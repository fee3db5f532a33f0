"""Does the SSIM gain rule still beat averaging on Lytro once it is computed the way the bundled model could?

Why: `bench_mff_rules.py` finds one local rule above averaging on all three metrics for multi-focus pairs:
the latent average's detail scaled by the gain k that maximises SSIM's contrast-structure sum. A transformer
computes per token (16 × 16 working pixels, a linear map of each token's content plus whatever attention
mixes in from other tokens), so here the rule runs through the model's data path (the pipeline's working size,
the linear autoencoder, decoded latent average c) in the forms a token could compute: k from each SSIM
window (the pixel rule, smoothed σ 2 px), from the windows' token means (smoothed σ 4 px, i.e. varying inside
a token), or from window statistics kept inside each token (token means; the
statistics optionally smoothed across neighbouring tokens, as an attention head could), applied per token as
a constant or interpolated between token centres, to the detail of c taken over the whole image or inside
each token (what a linear map of one token's content gives):
  F = c + (k − 1)·(c − Gσ(c)),  σ = 3 px of the input.

    python benchmarks/bench_mff_gain_tokens.py [--pairs 20] [--min-scale 3]
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
from bench_mff_rules import best_gain, block_mean, block_spread, window_stats  # noqa: E402
from eval_subsets import add_scores, delta_table, eval_root, spaced_pairs  # noqa: E402
from scipy.ndimage import gaussian_filter, zoom  # noqa: E402


def _tiles(x: np.ndarray, t: int) -> np.ndarray:
    """[H, W, ...] → [h, w, t, t, ...] (H, W multiples of t, as the pipeline's working size is)."""
    return x.reshape(x.shape[0] // t, t, x.shape[1] // t, t, *x.shape[2:]).swapaxes(1, 2)


def _untile(x: np.ndarray) -> np.ndarray:
    return x.swapaxes(1, 2).reshape(x.shape[0] * x.shape[2], x.shape[1] * x.shape[3], *x.shape[4:])


def token_window_stats(ga, gb, sigma: float, t: int) -> list[np.ndarray]:
    """`window_stats` with the windows kept inside each t × t token (reflected at its border), averaged over
    the token: what one token sees of its own content."""
    ga, gb = _tiles(ga, t), _tiles(gb, t)
    f = lambda x: gaussian_filter(x, (0, 0, sigma, sigma), mode="reflect")  # noqa: E731
    ma, mb = f(ga), f(gb)
    return [s.mean((2, 3)) for s in (f(ga * ga) - ma * ma, f(gb * gb) - mb * mb, f(ga * gb) - ma * mb)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=20, help="Lytro pairs, evenly spaced")
    ap.add_argument("--eval", default=None, help="shared/data/eval folder")
    ap.add_argument("--min-scale", type=float, default=None, help="working size ≥ this × the input (model default 2)")
    a = ap.parse_args()
    from PIL import Image

    from ditfuse_core import baselines, evaluation
    from ditfuse_core import images as imgs
    from ditfuse_core.pipeline import DiTFusePipeline

    root = eval_root(a.eval)
    if root is None:
        return
    pipe = DiTFusePipeline.from_pretrained(device="cpu")
    t = pipe.token_pixels
    t0 = time.time()
    pairs = spaced_pairs("mff", root / "mff/lytro", a.pairs)
    rows: dict[str, list] = {}
    for pair in pairs:
        i1, i2 = evaluation.load_image(pair.image1), evaluation.load_image(pair.image2)
        (p1, p2), sizes = pipe.preprocess([Image.fromarray(i1), Image.fromarray(i2)],
                                        min_scale=a.min_scale)
        with torch.no_grad():
            z1, z2 = pipe.encode(p1, sample=False), pipe.encode(p2, sample=False)
            A, B, C = ((pipe.decode(z)[0].permute(1, 2, 0).double().numpy() + 1) * 127.5
                       for z in (z1, z2, (z1 + z2) / 2))
        s = p1.shape[-1] / sizes[0][0]  # working pixels per input pixel
        ga, gb = A.mean(-1), B.mean(-1)

        def back(f: np.ndarray) -> np.ndarray:
            x = torch.from_numpy(f / 127.5 - 1).permute(2, 0, 1)[None].float()
            return imgs.restore(x, sizes[0])[0].numpy() * 255

        ct = _tiles(C, t)
        band = {"image": C - gaussian_filter(C, (3 * s, 3 * s, 0)),
                "token": _untile(ct - gaussian_filter(ct, (0, 0, 3 * s, 3 * s, 0), mode="reflect"))}
        fused = {"average (baseline)": baselines.fuse("average", i1, i2), "decoded latent average c": back(C)}
        whole = window_stats(ga, gb, 1.5 * s)
        k = gaussian_filter(best_gain(*whole), 2 * s)[..., None]
        fused["k per window, detail over the image (the pixel rule)"] = back(C + (k - 1) * band["image"])
        kb = best_gain(*(block_mean(x, t) for x in whole))
        kb = gaussian_filter(block_spread(kb, t, ga.shape), 4 * s)[..., None]
        fused["k per token from windows over the image (token means), smoothed σ 4 px, detail over the image"] = \
            back(C + (kb - 1) * band["image"])
        local = token_window_stats(ga, gb, 1.5 * s, t)
        for smooth in (0.0, 0.5):
            kt = best_gain(*(gaussian_filter(x, smooth, mode="nearest") if smooth else x for x in local))
            per = {"constant": block_spread(kt, t, ga.shape),
                   "interpolated": zoom(kt, t, order=1, mode="nearest", grid_mode=True)}
            for how, kk in per.items():
                for where, d in band.items():
                    name = f"k per token (stats smoothed {smooth} tokens), {how}, detail over the {where}"
                    fused[name] = back(C + (kk[..., None] - 1) * d)
        for name, f in fused.items():
            add_scores(rows, name, "mff", i1, i2, f)
    print(f"**mff/lytro** ({len(pairs)} pairs; tokens of {t} working px, {s:.2f} working px per input px; "
          "Δ = difference to the averaging baseline)\n")
    print(delta_table(rows, "average (baseline)"))
    print(f"\n{time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()

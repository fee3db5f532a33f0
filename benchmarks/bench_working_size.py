"""How the working size (max_side) trades the bundled model's fusion quality for time.

Why: the small autoencoders (f = 4) lose fine detail; upscaling the inputs before encoding moves that detail
to frequencies they keep, and the resampling back costs less than the autoencoder saves. This measures it on the
eval sets: per max side, the decoded latent average (what the constructed transformer computes before its
detail map; posterior means) against averaging the pixels, with the VAE time per pair.
Sizes above the model's position table (2048 for ditfuse-tiny) are clamped to it. --min-scales adds rows for
the rule the bundled model uses: its max side (1024), but at least min_scale× enlarged (up to the table).

    python benchmarks/bench_working_size.py [--sides 512,768,1024] [--min-scales 2] [--pairs 5] [--model FOLDER]
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

from eval_subsets import SETS, add_scores, delta_table, eval_root, spaced_pairs  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sides", default="512,768,1024")
    ap.add_argument("--min-scales", default="", help="also rows at the model's max side, enlarged at least this much "
                    "(comma-separated; the bundled model's default is 2)")
    ap.add_argument("--pairs", type=int, default=5, help="pairs per set, evenly spaced")
    ap.add_argument("--model", default=None)
    ap.add_argument("--eval", default=None, help="shared/data/eval folder")
    a = ap.parse_args()
    from PIL import Image

    from ditfuse_core import baselines, evaluation, images as imgs
    from ditfuse_core.pipeline import DiTFusePipeline

    root = eval_root(a.eval)
    if root is None:
        return
    pipe = DiTFusePipeline.from_pretrained(a.model)
    sides = sorted({min(int(s), pipe.largest_side) for s in a.sides.split(",") if s})
    rules = [(f"max side {s}", s, 0) for s in sides]
    base = pipe.defaults["max_side"]
    rules += [(f"max side {base}, ≥ {float(m):g}× (≤ {pipe.largest_side})", base, float(m))
              for m in a.min_scales.split(",") if m]
    print(f"model {pipe.name}, {a.pairs} pairs per set; Qabf, SSIM (mean of the two), VIF (sum), gray 0-255; "
          f"Δ = difference to averaging the pixels; s = VAE encode + decode per pair\n")
    for task, sub in SETS:
        pairs = spaced_pairs(task, root / sub, a.pairs)
        rows: dict[str, list] = {}
        for pair in pairs:
            g1, g2 = evaluation.load_image(pair.image1), evaluation.load_image(pair.image2)
            p1, p2 = Image.fromarray(g1).convert("RGB"), Image.fromarray(g2).convert("RGB")
            add_scores(rows, "average (pixels)", task, g1, g2, baselines.fuse("average", g1, g2), (0.0,))
            for name, side, min_scale in rules:
                t = time.perf_counter()
                (q1, q2), sizes = pipe.preprocess([p1, p2], side, min_scale)
                z = (pipe.encode(q1, sample=False) + pipe.encode(q2, sample=False)) / 2
                f = imgs.restore(pipe.decode(z), sizes[0])[0].numpy() * 255
                secs = time.perf_counter() - t
                add_scores(rows, name, task, g1, g2, f, (secs,))
        sizes = sorted({max(Image.open(p.image1).size) for p in pairs})
        print(f"**{sub}** ({len(pairs)} pairs, longest side {sizes[0]}–{sizes[-1]} px)\n")
        print(delta_table(rows, "average (pixels)", extra=("s",)) + "\n", flush=True)


if __name__ == "__main__":
    main()

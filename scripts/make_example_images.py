#!/usr/bin/env python3
"""Make the bundled example pairs in example_images/ from scikit-image's bundled photographs.

Deterministic (fixed seeds, no network). Every pair is image 1 / image 2 in the order DiTFusePipeline.fuse
expects: visible / infrared, far focus / near focus, over-exposed / under-exposed. All ≤ 512 px.

    python scripts/make_example_images.py [--out example_images] [--check]

--check regenerates into a temporary folder and fails if any file differs (the test suite runs it).
See example_images/README.md for how each pair is made and its licence.
"""
from __future__ import annotations

import argparse
import filecmp
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from ditfuse_core.prompts import PRESETS  # noqa: E402  (torch-free)
SIZE = 320  # longest side of every example image

PAIRS = {
    "ivif": {"image_1": "ivif_1_visible.png", "image_2": "ivif_2_infrared.png",
             "source": "skimage.data.astronaut()",
             # the authors' "warm targets" preset: the instruction that asks for the infrared's bright targets
             "instruction": PRESETS["ivif"][1]},
    "mff": {"image_1": "mff_1_far_focus.png", "image_2": "mff_2_near_focus.png",
            "source": "skimage.data.coffee()", "instruction": ""},
    "mef": {"image_1": "mef_1_over_exposed.png", "image_2": "mef_2_under_exposed.png",
            "source": "skimage.data.chelsea()", "instruction": ""},
}


def _resize(img: np.ndarray, longest: int = SIZE) -> np.ndarray:
    """uint8 HxWx3 → float 0..1 with the longest side `longest` (multiple of 16 on each side)."""
    h, w = img.shape[:2]
    s = longest / max(h, w)
    size = (max(16, int(round(w * s / 16)) * 16), max(16, int(round(h * s / 16)) * 16))
    pil = Image.fromarray(img).convert("RGB").resize(size, Image.LANCZOS)
    return np.asarray(pil, dtype=np.float64) / 255.0


def _save(arr: np.ndarray, path: Path) -> None:
    arr = np.clip(arr, 0.0, 1.0)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=-1)
    Image.fromarray((arr * 255.0 + 0.5).astype(np.uint8)).save(path, optimize=True)


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    return np.stack([ndimage.gaussian_filter(img[..., c], sigma) for c in range(img.shape[-1])], axis=-1)


def _luma(img: np.ndarray) -> np.ndarray:
    return img @ np.array([0.299, 0.587, 0.114])


def make_mff(photo: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Complementary defocus: a smooth depth map (near = lower-right cup region, far = upper background);
    image 1 keeps the far region sharp and blurs the near one, image 2 the opposite."""
    h, w = photo.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w]
    # Near region: an ellipse around the cup in skimage's coffee photo (centre right of the frame).
    cy, cx = 0.55 * h, 0.55 * w
    near = ((yy - cy) / (0.42 * h)) ** 2 + ((xx - cx) / (0.36 * w)) ** 2 < 1.0
    near = ndimage.gaussian_filter(near.astype(np.float64), 6.0)[..., None]  # soft focus transition
    blurred = _blur(photo, 3.5)
    far_focus = near * blurred + (1 - near) * photo    # image 1: background sharp
    near_focus = near * photo + (1 - near) * blurred   # image 2: foreground sharp
    return far_focus, near_focus


def make_mef(photo: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two exposures of one scene in linear light: +2 EV with clipping (over) and −2.6 EV with a darker
    tone curve and a little sensor noise (under), both re-encoded with the sRGB-like gamma 2.2."""
    rng = np.random.default_rng(2)
    linear = photo ** 2.2
    over = np.clip(linear * 2 ** 2.0, 0, 1) ** (1 / 2.2)
    under = np.clip(linear * 2 ** -2.6, 0, 1) ** (1 / 2.2)
    under = np.clip(under ** 1.15 + rng.normal(0, 0.008, under.shape), 0, 1)
    return over, under


def make_ivif(photo: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A night-time visible image and a synthetic thermal (LWIR-like) rendering of the same scene.

    The thermal image is rendered, not measured: a temperature map from simple colour cues (the person —
    skin ~ 34 °C, the orange suit ~ 29 °C as clothing over a warm body — and a cool background of 12–17 °C
    with a soft vertical gradient; the flag, shuttle and helmet are background), mapped to 8-bit "white-hot" intensity, then the optics and sensor: a Gaussian PSF
    (thermal cameras are blurrier), 2× lower resolution, fixed-pattern column noise and temporal noise.
    It carries no visible-band texture or colour, just as a real thermal image. The visible image is
    darkened and slightly noisy (low light), so each image has what the other lacks."""
    rng = np.random.default_rng(3)
    h, w = photo.shape[:2]
    r, g, b = photo[..., 0], photo[..., 1], photo[..., 2]
    maxc, minc = photo.max(-1), photo.min(-1)
    sat = (maxc - minc) / np.maximum(maxc, 1e-6)
    yy, xx = np.mgrid[0:h, 0:w]
    # The person: skin (reddish, moderately saturated) in the upper half, the orange suit below.
    skin = (r > 0.45) & (r > g + 0.06) & (g > b) & (sat > 0.15) & (sat < 0.6) & (yy < 0.42 * h) & (xx < 0.6 * w)
    suit = (r > 0.45) & (r - b > 0.3) & (sat > 0.5) & (yy > 0.3 * h)
    body = ndimage.binary_fill_holes(ndimage.binary_closing(skin | suit, iterations=3))
    skin = ndimage.binary_opening(skin, iterations=1)
    temp = 12.0 + 5.0 * (yy / h)                      # background: 12–17 °C, warmer towards the floor
    temp = np.where(body, 29.0, temp)                 # clothing over a warm body
    temp = np.where(skin, 34.0, temp)                 # exposed skin
    temp = ndimage.gaussian_filter(temp, 2.0)          # heat spreads a little
    lo, hi = 10.0, 36.0
    thermal = np.clip((temp - lo) / (hi - lo), 0, 1)
    # Optics and sensor.
    thermal = ndimage.gaussian_filter(thermal, 1.6)
    small = np.asarray(Image.fromarray((thermal * 255).astype(np.uint8)).resize((w // 2, h // 2), Image.BILINEAR),
                       dtype=np.float64) / 255.0
    thermal = np.asarray(Image.fromarray((small * 255).astype(np.uint8)).resize((w, h), Image.BILINEAR),
                         dtype=np.float64) / 255.0
    thermal = thermal + rng.normal(0, 0.004, (1, w)) + rng.normal(0, 0.008, (h, w))
    thermal = np.clip(thermal, 0, 1)
    # Visible at night: darker, blue-ish cast, a little noise.
    visible = np.clip(0.32 * photo ** 1.6 * np.array([0.85, 0.95, 1.1]) + rng.normal(0, 0.008, photo.shape), 0, 1)
    return visible, thermal


def make_all(out: Path) -> dict:
    from skimage import data

    out.mkdir(parents=True, exist_ok=True)
    made = {
        "ivif": make_ivif(_resize(data.astronaut())),
        "mff": make_mff(_resize(data.coffee())),
        "mef": make_mef(_resize(data.chelsea())),
    }
    for task, (im1, im2) in made.items():
        _save(im1, out / PAIRS[task]["image_1"])
        _save(im2, out / PAIRS[task]["image_2"])
    manifest = {"pairs": PAIRS, "generated_by": "scripts/make_example_images.py"}
    (out / "pairs.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "example_images")
    ap.add_argument("--check", action="store_true", help="fail if the committed files differ from a fresh run")
    a = ap.parse_args(argv)
    if a.check:
        with tempfile.TemporaryDirectory() as tmp:
            make_all(Path(tmp))
            names = sorted(p.name for p in Path(tmp).iterdir())
            _, mismatch, errors = filecmp.cmpfiles(tmp, a.out, names, shallow=False)
            if mismatch or errors:
                print(f"example images differ from a fresh run: {mismatch + errors}", file=sys.stderr)
                return 1
        print("example images up to date")
        return 0
    make_all(a.out)
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

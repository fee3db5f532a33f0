"""M3 training data for DiTFuse: self-supervised fusion pairs, control and segmentation targets.

Everything works on ``uint8`` RGB arrays ``[H, W, 3]`` and a ``numpy.random.Generator``; a sample is a
pure function of ``(seed, index)`` (see :class:`M3Generator`), so data are reproducible without storing
them. Output format (OmniGen's): ``{"instruction", "input_images", "output_image"}``.

Fusion samples (target = the clean image):

* ``m3``  – the DiTFuse "multi-degradation mask" pairs: square blocks of one size per image
  (32/64/128 px), each degraded (random-pixel mask, noise or blur) in exactly one of the two copies;
  optional "both" mode degrades ``max(1, n_blocks // 4)`` blocks in both copies.
* ``mef`` – exposure imbalance: image 1 over-exposed, image 2 under-exposed (with clipping/quantisation).
* ``mff`` – defocus with complementary focus maps: image 1 far-focus (background sharp),
  image 2 near-focus (foreground sharp).
* ``ivif`` – image 1 a visible copy with low light + noise / haze / colour shift in places, image 2 an
  infrared-like copy (gray, remapped or inverted intensities, low texture, "hot" objects).

Control and segmentation samples take an M3 pair of the source as their two inputs, as the authors' do (the
model fuses and adjusts / segments): the target is the source with its brightness (LIGHT++/+/-/--) or contrast
(CONTRAST+/-) changed, or with a translucent blue overlay on a named MSRC class.
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
from scipy import ndimage

from . import prompts

BLOCK_SIZES = (32, 64, 128)
BLUR_KERNELS = (3, 5, 7, 9, 11)
DEGRADATIONS = ("mask", "noise", "blur")
SEG_COLOR = (0, 0, 255)
SEG_ALPHA = 0.5

CONTROL_KINDS = prompts.ADJUSTMENTS
# gamma applied to [0, 1] intensities (< 1 brightens)
LIGHT_GAMMA = {"LIGHT++": 0.45, "LIGHT+": 0.7, "LIGHT-": 1.45, "LIGHT--": 2.2}
CONTRAST_GAIN = {"CONTRAST+": 1.45, "CONTRAST-": 0.6}

MSRC_CLASSES = (
    "building", "grass", "tree", "cow", "horse", "sheep", "sky", "mountain", "aeroplane", "water",
    "face", "car", "bicycle", "flower", "sign", "bird", "book", "chair", "road", "cat", "dog", "body",
    "boat",
)
# what a user would type for an MSRC class name
CLASS_WORDS = {"body": "person", "face": "face", "aeroplane": "airplane"}

# ----------------------------------------------------------------------------------------------------
# prompts: the core's builders and presets (ditfuse_core.prompts), with the M3 task named "generic" there
# ----------------------------------------------------------------------------------------------------

SEG_EXTRAS = ["", "Mark it with a translucent blue overlay.", "Highlight it in blue."]


def fusion_instruction(task: str, requirement: str = "") -> str:
    return prompts.fusion_prompt("generic" if task == "m3" else task, requirement)


def control_instruction(kind: str, requirement: str = "") -> str:
    return prompts.control_prompt(kind, requirement)


def seg_instruction(class_word: str, extra: str = "") -> str:
    return prompts.segmentation_prompt(class_word, extra)


def pick_requirement(task: str, rng: np.random.Generator, p_default: float = 0.5) -> str:
    """Half the time "" (the standard prompt, what the model sees by default), else one of the task's presets.
    Control samples always take the standard prompt (the authors give one wording per level)."""
    if task in CONTROL_KINDS or rng.random() < p_default:
        return ""
    pool = prompts.PRESETS["generic" if task == "m3" else task]
    return pool[int(rng.integers(len(pool)))]


# ----------------------------------------------------------------------------------------------------
# elementary degradations (uint8 in, uint8 out)
# ----------------------------------------------------------------------------------------------------

def _luma(img: np.ndarray) -> np.ndarray:
    """BT.601 luminance of an RGB uint8 image, float32 on 0–255."""
    return img.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)


def _u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def random_pixels(shape, rng: np.random.Generator) -> np.ndarray:
    """Uniform 0..255 per pixel and channel."""
    return rng.integers(0, 256, size=shape, dtype=np.uint8)


def add_noise(img: np.ndarray, rng: np.random.Generator, kind: str | None = None) -> tuple[np.ndarray, dict]:
    """50 % Gaussian (sigma ~ U[10, 35] on 0..255), 50 % salt-and-pepper (ratio ~ U[0.01, 0.03])."""
    kind = kind or ("gaussian" if rng.random() < 0.5 else "saltpepper")
    if kind == "gaussian":
        sigma = float(rng.uniform(10, 35))
        out = _u8(img.astype(np.float32) + rng.normal(0, sigma, img.shape).astype(np.float32))
        return out, {"noise": "gaussian", "sigma": sigma}
    ratio = float(rng.uniform(0.01, 0.03))
    out = img.copy()
    h, w = img.shape[:2]
    m = rng.random((h, w))
    salt = rng.random((h, w)) < 0.5
    hit = m < ratio
    out[hit & salt] = 255
    out[hit & ~salt] = 0
    return out, {"noise": "saltpepper", "ratio": ratio}


def blur(img: np.ndarray, kind: str, k: int, sigma: float = 1.0) -> np.ndarray:
    x = img.astype(np.float32)
    if kind == "gaussian":
        r = k // 2
        out = ndimage.gaussian_filter(x, sigma=(sigma, sigma, 0), truncate=r / sigma, mode="reflect")
    elif kind == "box":
        out = ndimage.uniform_filter(x, size=(k, k, 1), mode="reflect")
    elif kind == "median":
        return ndimage.median_filter(img, size=(k, k, 1), mode="reflect")
    else:
        raise ValueError(kind)
    return _u8(out)


def random_blur(img: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Kernel in {3,5,7,9,11}; Gaussian (sigma ~ U[0.8, 3]), box or median."""
    k = int(rng.choice(BLUR_KERNELS))
    kind = ("gaussian", "box", "median")[int(rng.integers(3))]
    sigma = float(rng.uniform(0.8, 3.0))
    return blur(img, kind, k, sigma), {"blur": kind, "k": k, "sigma": sigma if kind == "gaussian" else None}


def degrade_region(img: np.ndarray, y: int, x: int, s: int, kind: str, rng: np.random.Generator) -> dict:
    """Degrade the square ``img[y:y+s, x:x+s]`` in place; blur sees a context margin, writes only the block."""
    h, w = img.shape[:2]
    if kind == "mask":
        img[y:y + s, x:x + s] = random_pixels(img[y:y + s, x:x + s].shape, rng)
        return {"kind": "mask"}
    if kind == "noise":
        out, info = add_noise(img[y:y + s, x:x + s], rng)
        img[y:y + s, x:x + s] = out
        return {"kind": "noise", **info}
    if kind == "blur":
        m = 6
        y0, x0, y1, x1 = max(0, y - m), max(0, x - m), min(h, y + s + m), min(w, x + s + m)
        out, info = random_blur(img[y0:y1, x0:x1], rng)
        img[y:y + s, x:x + s] = out[y - y0:y - y0 + s, x - x0:x - x0 + s]
        return {"kind": "blur", **info}
    raise ValueError(kind)


# ----------------------------------------------------------------------------------------------------
# M3 block pairs
# ----------------------------------------------------------------------------------------------------

@dataclass
class Block:
    y: int
    x: int
    size: int
    copies: tuple[int, ...]  # 1, 2 or (1, 2)
    degradations: list = field(default_factory=list)


def m3_pair(clean: np.ndarray, rng: np.random.Generator, block_size: int | None = None,
            n_blocks: int | None = None, both: bool = False,
            kinds: Sequence[str] = DEGRADATIONS) -> tuple[np.ndarray, np.ndarray, list[Block]]:
    """Two copies of ``clean``; each chosen block is degraded in exactly one copy (``both``: additionally
    ``max(1, n_blocks // 4)`` blocks in both copies). Blocks lie on a grid of ``block_size`` cells, so they
    never overlap. Returns ``(img1, img2, blocks)``."""
    h, w = clean.shape[:2]
    sizes = [s for s in BLOCK_SIZES if s <= min(h, w)] or [min(h, w)]
    s = int(block_size or sizes[int(rng.integers(len(sizes)))])
    gy, gx = h // s, w // s
    oy, ox = int(rng.integers(h - gy * s + 1)), int(rng.integers(w - gx * s + 1))
    cells = gy * gx
    if n_blocks is None:
        lo = max(1, int(round(cells * 0.25)))
        hi = max(lo, int(round(cells * 0.6)))
        n_blocks = int(rng.integers(lo, hi + 1))
    n_blocks = int(min(max(n_blocks, 1), cells))
    chosen = rng.permutation(cells)[:n_blocks]
    n_both = max(1, n_blocks // 4) if both else 0
    both_set = set(rng.permutation(n_blocks)[:n_both].tolist())
    # balance the copies: half the single-copy blocks in copy 1, half in copy 2 (random order)
    singles = [i for i in range(n_blocks) if i not in both_set]
    sides = np.array([1, 2] * (len(singles) // 2 + 1))[: len(singles)]
    sides = rng.permutation(sides)
    side_of = dict(zip(singles, sides.tolist()))
    img1, img2 = clean.copy(), clean.copy()
    blocks = []
    for i, c in enumerate(chosen.tolist()):
        y, x = oy + (c // gx) * s, ox + (c % gx) * s
        copies = (1, 2) if i in both_set else (side_of[i],)
        b = Block(y, x, s, copies)
        for cp in copies:
            kind = kinds[int(rng.integers(len(kinds)))]
            b.degradations.append(degrade_region(img1 if cp == 1 else img2, y, x, s, kind, rng))
        blocks.append(b)
    return img1, img2, blocks


# ----------------------------------------------------------------------------------------------------
# real-task degradations
# ----------------------------------------------------------------------------------------------------

def _to_lin(img: np.ndarray) -> np.ndarray:
    return (img.astype(np.float32) / 255.0) ** 2.2


def _from_lin(lin: np.ndarray) -> np.ndarray:
    return _u8(np.clip(lin, 0, 1) ** (1 / 2.2) * 255.0)


def smooth_field(h: int, w: int, rng: np.random.Generator, scale: float = 0.15) -> np.ndarray:
    """Random smooth field in [0, 1]: low-resolution noise, smoothed, bilinearly upsampled."""
    from PIL import Image

    gh, gw = max(2, int(math.ceil(h * scale / 8))), max(2, int(math.ceil(w * scale / 8)))
    g = ndimage.gaussian_filter(rng.random((gh + 2, gw + 2)).astype(np.float32), 0.7)[1:-1, 1:-1]
    f = np.asarray(Image.fromarray(np.ascontiguousarray(g), mode="F").resize((w, h), Image.BILINEAR))
    f = f - f.min()
    return f / max(float(f.max()), 1e-6)


def gaussian_blur_u8(img: np.ndarray, sigma: float) -> np.ndarray:
    """Fast Gaussian blur of a uint8 image (PIL's, for the large whole-image blurs)."""
    from PIL import Image, ImageFilter

    if img.ndim == 2:
        return np.asarray(Image.fromarray(img).filter(ImageFilter.GaussianBlur(sigma)))
    return np.asarray(Image.fromarray(img).filter(ImageFilter.GaussianBlur(sigma)))


def exposure_pair(clean: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, dict]:
    """MEF: returns ``(over, under)`` = (image 1, image 2): linear-light exposure changes of
    U[1, 3] stops each way, with clipping, a mild spatial gain field and shadow noise in the dark copy."""
    lin = _to_lin(clean)
    ev_o, ev_u = float(rng.uniform(1.0, 3.0)), float(rng.uniform(1.0, 3.0))
    h, w = clean.shape[:2]
    field_ = 1.0 + 0.3 * (smooth_field(h, w, rng) - 0.5)
    over = _from_lin(lin * (2.0 ** ev_o) * field_[..., None])
    under_lin = lin * (2.0 ** -ev_u) * field_[..., None]
    under = under_lin ** (1 / 2.2) * 255.0
    under = _u8(under + rng.normal(0, float(rng.uniform(0.5, 3.0)), under.shape))
    return over, under, {"ev_over": ev_o, "ev_under": ev_u}


def low_light(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Dark (gain 0.08–0.35 in linear light) and noisy (sigma 2–10) version."""
    lin = _to_lin(img) * float(rng.uniform(0.08, 0.35))
    out = np.clip(lin, 0, 1) ** (1 / 2.2) * 255.0
    return _u8(out + rng.normal(0, float(rng.uniform(2, 10)), out.shape))


def colour_shift(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    gains = rng.uniform(0.6, 1.4, size=3).astype(np.float32)
    return _u8(img.astype(np.float32) * gains)


def haze(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    a = float(rng.uniform(0.4, 0.8))
    air = float(rng.uniform(170, 240))
    return _u8(img.astype(np.float32) * (1 - a) + air * a)


def random_blob_mask(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Soft-edged random region (a smooth field thresholded near its median), float [0, 1]."""
    f = smooth_field(h, w, rng, scale=float(rng.uniform(0.08, 0.2)))
    thr = float(rng.uniform(0.35, 0.65))
    m = (f > thr).astype(np.float32)
    if m.mean() < 0.1 or m.mean() > 0.9:
        m = (f > np.median(f)).astype(np.float32)
    return m


def defocus(img: np.ndarray, sigma: float) -> np.ndarray:
    return gaussian_blur_u8(img, sigma)


def focus_pair(clean: np.ndarray, rng: np.random.Generator, near: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray, dict]:
    """MFF: ``near`` (float mask, 1 = foreground) is in focus only in image 2 (near-focus); the rest only in
    image 1 (far-focus). Complementary soft focus maps (the mask feathered by ~2 px)."""
    h, w = clean.shape[:2]
    if near is None:
        near = random_blob_mask(h, w, rng)
    m = gaussian_blur_u8(_u8(near * 255.0), 2.0).astype(np.float32)[..., None] / 255.0
    s1, s2 = float(rng.uniform(1.5, 4.5)), float(rng.uniform(1.5, 4.5))
    c = clean.astype(np.float32)
    img1 = _u8(c * (1 - m) + defocus(clean, s1).astype(np.float32) * m)  # far-focus: foreground blurred
    img2 = _u8(c * m + defocus(clean, s2).astype(np.float32) * (1 - m))  # near-focus: background blurred
    return img1, img2, {"sigma_far_img": s1, "sigma_near_img": s2, "near_fraction": float(near.mean())}


def infrared_like(clean: np.ndarray, rng: np.random.Generator, hot: np.ndarray | None = None) -> np.ndarray:
    """Gray, remapped (50 % inverted, else a random piecewise-linear curve) intensities, low texture,
    optional bright "hot" regions (``hot``: float mask)."""
    g = _luma(clean) / 255.0
    if rng.random() < 0.5:
        g = 1.0 - g
    else:
        xs = np.linspace(0, 1, 5)
        ys = np.sort(rng.uniform(0, 1, 5)) if rng.random() < 0.6 else rng.uniform(0, 1, 5)
        g = np.interp(g, xs, ys).astype(np.float32)
    g = g * 0.6 + 0.2 * smooth_field(*g.shape, rng) + 0.1
    g = gaussian_blur_u8(_u8(g * 255.0), float(rng.uniform(1.0, 2.5))).astype(np.float32) / 255.0
    if hot is not None and hot.any():
        hm = gaussian_blur_u8(_u8(hot * 255.0), 1.5).astype(np.float32) / 255.0
        g = g * (1 - hm) + np.clip(0.75 + 0.25 * g, 0, 1) * hm
    g = g + rng.normal(0, 0.01, g.shape).astype(np.float32)
    return np.repeat(_u8(g * 255.0)[..., None], 3, axis=2)


def random_hot_spots(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """1–3 small filled ellipses (people/vehicle-sized warm objects), float mask."""
    m = np.zeros((h, w), np.float32)
    yy, xx = np.mgrid[0:h, 0:w]
    for _ in range(int(rng.integers(1, 4))):
        cy, cx = rng.uniform(0.15, 0.85) * h, rng.uniform(0.1, 0.9) * w
        ry, rx = rng.uniform(0.05, 0.16) * h, rng.uniform(0.03, 0.1) * w
        m[((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1] = 1
    return m


def ivif_pair(clean: np.ndarray, rng: np.random.Generator, hot: np.ndarray | None = None,
              ir_real: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """IVIF: image 1 visible (degraded in a random region or everywhere: low light + noise, haze or colour
    shift), image 2 infrared-like with warm objects (``hot`` mask, e.g. people/animals/cars from the labels,
    else random small blobs). Target: the clean image with the warm objects brightened towards their
    infrared intensity, so the fused result keeps both the visible detail and the thermal targets."""
    h, w = clean.shape[:2]
    kind = ("lowlight", "haze", "colour")[int(rng.integers(3))]
    deg = {"lowlight": low_light, "haze": haze, "colour": colour_shift}[kind](clean, rng)
    if rng.random() < 0.3:
        m = np.ones((h, w), np.float32)
    else:
        m = gaussian_blur_u8(_u8(random_blob_mask(h, w, rng) * 255.0), 3.0).astype(np.float32) / 255.0
    vis = _u8(clean.astype(np.float32) * (1 - m[..., None]) + deg.astype(np.float32) * m[..., None])
    if ir_real is not None:
        irf = ir_real.astype(np.float32)
        local = gaussian_blur_u8(ir_real, max(h, w) * 0.08).astype(np.float32)
        hot = np.clip((irf - local - 20.0) / 40.0, 0, 1) * (irf > 110)
        ir = np.repeat(ir_real[..., None], 3, axis=2)
    else:
        if hot is None or not (0.005 < float(hot.mean()) < 0.5) or rng.random() < 0.3:
            hot = random_hot_spots(h, w, rng) if rng.random() < 0.7 else None
        ir = infrared_like(clean, rng, hot)
    target = clean
    if hot is not None and hot.any():
        hm = gaussian_blur_u8(_u8(hot * 255.0), 1.5).astype(np.float32)[..., None] / 255.0
        lum = _luma(clean)
        a = float(rng.uniform(0.35, 0.65))
        delta = np.clip(ir[..., 0].astype(np.float32) - lum, 0, None)[..., None]
        target = _u8(clean.astype(np.float32) + a * hm * delta)
    return vis, ir, target, {"visible_degradation": kind, "fraction": float(m.mean()),
                             "hot_fraction": float(hot.mean()) if hot is not None else 0.0}


# ----------------------------------------------------------------------------------------------------
# control and segmentation targets
# ----------------------------------------------------------------------------------------------------

def control_target(img: np.ndarray, kind: str) -> np.ndarray:
    x = img.astype(np.float32) / 255.0
    if kind in LIGHT_GAMMA:
        return _u8(x ** LIGHT_GAMMA[kind] * 255.0)
    if kind in CONTRAST_GAIN:
        mean = x.mean(axis=(0, 1), keepdims=True)
        return _u8(((x - mean) * CONTRAST_GAIN[kind] + mean) * 255.0)
    raise ValueError(f"unknown control kind {kind!r}; one of {CONTROL_KINDS}")


def seg_overlay(img: np.ndarray, mask: np.ndarray, alpha: float = SEG_ALPHA,
                color: Sequence[int] = SEG_COLOR) -> np.ndarray:
    """Translucent blue where ``mask`` is true, the image unchanged elsewhere."""
    out = img.copy()
    m = mask.astype(bool)
    blend = img[m].astype(np.float32) * (1 - alpha) + np.asarray(color, np.float32) * alpha
    out[m] = _u8(blend)
    return out


# ----------------------------------------------------------------------------------------------------
# sources
# ----------------------------------------------------------------------------------------------------

def load_rgb(path: str | os.PathLike) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def load_gray(path: str | os.PathLike) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("L"))


@dataclass
class Source:
    """One clean image; ``labels`` (uint8 MSRC class map) if it has named classes; ``ir`` path for a
    registered real infrared image."""
    image: str
    labels: str | None = None
    ir: str | None = None
    kind: str = "natural"


def default_data_root() -> Path:
    env = os.environ.get("DITFUSE_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[1].parent / "shared" / "data"


def scan_sources(root: str | os.PathLike | None = None) -> list[Source]:
    """Sources from ``shared/data/train`` (MSRC with labels, BSDS500, RoadScene visible + IR) or from a
    pack made by ``training.pack.build_pack`` (``index.json`` at ``root``)."""
    root = Path(root) if root is not None else default_data_root()
    idx = root / "index.json"
    if idx.exists():
        items = json.loads(idx.read_text())["sources"]
        out = []
        for it in items:
            out.append(Source(str(root / it["image"]), str(root / it["labels"]) if it.get("labels") else None,
                              str(root / it["ir"]) if it.get("ir") else None, it.get("kind", "natural")))
        return out
    train = root / "train" if (root / "train").is_dir() else root
    out = []
    msrc = train / "natural" / "msrc_v2"
    for p in sorted((msrc / "images").glob("*.jpg")):
        lab = msrc / "labels" / f"{p.stem}_sem.png"
        out.append(Source(str(p), str(lab) if lab.exists() else None, None, "msrc"))
    for p in sorted((train / "natural" / "bsds500" / "images").glob("*/*.jpg")):
        out.append(Source(str(p), None, None, "bsds"))
    for p in sorted((train / "roadscene" / "vi").glob("*.jpg")):
        ir = train / "roadscene" / "ir" / p.name
        out.append(Source(str(p), None, str(ir) if ir.exists() else None, "roadscene"))
    return out


# ----------------------------------------------------------------------------------------------------
# the generator
# ----------------------------------------------------------------------------------------------------

FUSION_TASKS = ("m3", "ivif", "mff", "mef")
IVIF_GRAY = 0.35  # fraction of IVIF samples made from a gray scene
DEFAULT_MIX = {"m3": 0.30, "ivif": 0.18, "mff": 0.16, "mef": 0.16, "control": 0.10, "seg": 0.10}


@dataclass
class Sample:
    task: str               # m3 | ivif | mff | mef | control | seg
    instruction: str
    inputs: list            # list of uint8 [H, W, 3]
    target: np.ndarray
    info: dict


def _random_crop(img: np.ndarray, lab: np.ndarray | None, ir: np.ndarray | None, size: int,
                 rng: np.random.Generator):
    """Rescale by U[0.6, 1.0] of the native resolution (more when the short side would not cover
    ``size``), then crop ``size``×``size``: content density stays close to that of real photos at the
    pipeline's working size instead of whole images squeezed into small crops."""
    from PIL import Image

    h, w = img.shape[:2]
    scale = max(size / min(h, w), float(rng.uniform(0.6, 1.0)))
    if abs(scale - 1.0) > 1e-3:
        nh, nw = max(size, int(round(h * scale))), max(size, int(round(w * scale)))
        img = np.asarray(Image.fromarray(img).resize((nw, nh), Image.BICUBIC))
        if lab is not None:
            lab = np.asarray(Image.fromarray(lab).resize((nw, nh), Image.NEAREST))
        if ir is not None:
            ir = np.asarray(Image.fromarray(ir).resize((nw, nh), Image.BICUBIC))
        h, w = nh, nw
    y, x = int(rng.integers(h - size + 1)), int(rng.integers(w - size + 1))
    sl = (slice(y, y + size), slice(x, x + size))
    img = img[sl]
    lab = lab[sl] if lab is not None else None
    ir = ir[sl] if ir is not None else None
    if rng.random() < 0.5:
        img = img[:, ::-1]
        lab = lab[:, ::-1] if lab is not None else None
        ir = ir[:, ::-1] if ir is not None else None
    return np.ascontiguousarray(img), (np.ascontiguousarray(lab) if lab is not None else None), \
        (np.ascontiguousarray(ir) if ir is not None else None)


class M3Generator:
    """Deterministic sample generator: ``gen.sample(i)`` depends only on ``(seed, i)`` and the sources."""

    def __init__(self, sources: Sequence[Source] | None = None, seed: int = 0, size: int = 256,
                 mix: dict | None = None, both_prob: float = 0.25, data_root=None):
        self.sources = list(sources) if sources is not None else scan_sources(data_root)
        if not self.sources:
            raise FileNotFoundError("no training images found (shared/data/train or a pack)")
        self.seed = int(seed)
        self.size = int(size)
        self.mix = dict(mix or DEFAULT_MIX)
        self.both_prob = both_prob
        self.labelled = [i for i, s in enumerate(self.sources) if s.labels]
        self._cache: dict = {}
        if not self.labelled:
            self.mix.pop("seg", None)
        tot = sum(self.mix.values())
        self.tasks = list(self.mix)
        self.probs = np.array([self.mix[t] / tot for t in self.tasks])

    def _load(self, i: int):
        if i not in self._cache:
            s = self.sources[i]
            img = load_rgb(s.image)
            lab = load_gray(s.labels) if s.labels else None
            ir = load_gray(s.ir) if s.ir else None
            if ir is not None and ir.shape != img.shape[:2]:
                ir = None
            if len(self._cache) > 4096:
                self._cache.clear()
            self._cache[i] = (img, lab, ir)
        return self._cache[i]

    def __len__(self):
        return 2 ** 31 - 1

    def sample(self, index: int, task: str | None = None) -> Sample:
        rng = np.random.default_rng([self.seed, int(index)])
        task = task or self.tasks[int(rng.choice(len(self.tasks), p=self.probs))]
        pool = self.labelled if task == "seg" else range(len(self.sources))
        src = int(rng.choice(pool)) if task == "seg" else int(rng.integers(len(self.sources)))
        img, lab, ir = self._load(src)
        if task == "seg":
            # crop until the crop contains a usable class (a few tries)
            for _ in range(6):
                c_img, c_lab, _ = _random_crop(img, lab, None, self.size, rng)
                ids = [int(v) for v in np.unique(c_lab) if 0 < v <= len(MSRC_CLASSES)
                       and (c_lab == v).mean() > 0.01]
                if ids:
                    break
            else:  # the whole image downsized instead
                ids = [int(v) for v in np.unique(lab) if 0 < v <= len(MSRC_CLASSES)]
            cid = ids[int(rng.integers(len(ids)))]
            cname = MSRC_CLASSES[cid - 1]
            word = CLASS_WORDS.get(cname, cname)
            mask = c_lab == cid
            extra = SEG_EXTRAS[int(rng.integers(len(SEG_EXTRAS)))]
            a, b, _ = m3_pair(c_img, rng)  # the authors' layout: fuse an M3 pair and segment
            return Sample("seg", seg_instruction(word, extra), [a, b], seg_overlay(c_img, mask),
                          {"class": word, "class_id": cid, "source": self.sources[src].image})
        clean, c_lab, c_ir = _random_crop(img, lab, ir, self.size, rng)
        info = {"source": self.sources[src].image}
        if task == "copy":
            # curriculum: both inputs are the target, under a random fusion instruction (cheap way to learn
            # that each output token copies the input tokens at its own spatial position)
            ft = FUSION_TASKS[int(rng.integers(len(FUSION_TASKS)))]
            return Sample("copy", fusion_instruction(ft, pick_requirement(ft, rng)), [clean, clean.copy()],
                          clean.copy(), {**info, "instruction_task": ft})
        if task == "control":
            kind = CONTROL_KINDS[int(rng.integers(len(CONTROL_KINDS)))]
            a, b, _ = m3_pair(clean, rng)  # the authors' layout: fuse an M3 pair and adjust
            return Sample("control", control_instruction(kind, pick_requirement(kind, rng)), [a, b],
                          control_target(clean, kind), {**info, "kind": kind})
        if task == "m3":
            both = rng.random() < self.both_prob
            a, b, blocks = m3_pair(clean, rng, both=both)
            info.update(both=both, n_blocks=len(blocks), block_size=blocks[0].size if blocks else None)
        elif task == "mef":
            a, b, more = exposure_pair(clean, rng)
            info.update(more)
        elif task == "mff":
            near = None
            if c_lab is not None and rng.random() < 0.7:
                ids = [v for v in np.unique(c_lab) if v > 0]
                if ids:
                    pick = rng.permutation(ids)[: max(1, len(ids) // 2)]
                    near = np.isin(c_lab, pick).astype(np.float32)
                    if near.mean() < 0.05 or near.mean() > 0.95:
                        near = None
            a, b, more = focus_pair(clean, rng, near)
            info.update(more)
        elif task == "ivif":
            hot = None
            if c_lab is not None:
                hot = np.isin(c_lab, [4, 5, 6, 11, 12, 16, 20, 21, 22]).astype(np.float32)  # animals, people, cars
            real = c_ir if (c_ir is not None and rng.random() < 0.6) else None
            gray_scene = rng.random() < IVIF_GRAY
            if gray_scene:  # many IVIF benchmarks (TNO) have gray visible images: gray in, gray out
                clean = np.repeat(_u8(_luma(clean))[..., None], 3, axis=2)
            a, b, target, more = ivif_pair(clean, rng, hot, real)
            info["gray_visible"] = gray_scene
            info["real_ir"] = real is not None
            info.update(more)
            instr = fusion_instruction(task, pick_requirement(task, rng))
            return Sample(task, instr, [a, b], target, info)
        else:
            raise ValueError(task)
        instr = fusion_instruction(task, pick_requirement(task, rng))
        return Sample(task, instr, [a, b], clean, info)

    def __iter__(self) -> Iterator[Sample]:
        i = 0
        while True:
            yield self.sample(i)
            i += 1


def write_jsonl(out_dir: str | os.PathLike, n: int, seed: int = 0, size: int = 256, sources=None,
                data_root=None, mix: dict | None = None, progress: Callable[[int, int], None] | None = None
                ) -> Path:
    """Materialise ``n`` samples as PNGs + ``train.jsonl`` with OmniGen's fields
    ``{"instruction", "input_images", "output_image"}`` (paths relative to ``out_dir``)."""
    from PIL import Image

    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    gen = M3Generator(sources, seed=seed, size=size, mix=mix, data_root=data_root)
    path = out / "train.jsonl"
    with open(path, "w") as f:
        for i in range(n):
            s = gen.sample(i)
            ins = []
            for k, im in enumerate(s.inputs):
                p = f"images/{i:07d}_in{k + 1}.png"
                Image.fromarray(im).save(out / p)
                ins.append(p)
            tp = f"images/{i:07d}_out.png"
            Image.fromarray(s.target).save(out / tp)
            f.write(json.dumps({"instruction": s.instruction, "input_images": ins, "output_image": tp,
                                "task": s.task}) + "\n")
            if progress:
                progress(i + 1, n)
    return path


def main(argv=None):  # python -m ditfuse_core.m3 OUT_DIR -n 1000
    import argparse

    ap = argparse.ArgumentParser(description="write M3 training samples as JSONL + PNG")
    ap.add_argument("out")
    ap.add_argument("-n", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--data", default=None, help="shared/data (default) or a train pack folder")
    a = ap.parse_args(argv)
    p = write_jsonl(a.out, a.n, a.seed, a.size, data_root=a.data)
    print(p)


if __name__ == "__main__":
    main()

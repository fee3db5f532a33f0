"""M3 degradations: the block pairs (each block degraded in one of two copies), the real-task pairs (exposure,
focus, infrared-visible) and the control / segmentation targets. uint8 RGB ``[H, W, 3]`` in and out, a
``numpy.random.Generator`` for every random choice."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from scipy import ndimage

from ... import prompts

BLOCK_SIZES = (32, 64, 128)
BLUR_KERNELS = (3, 5, 7, 9, 11)
DEGRADATIONS = ("mask", "noise", "blur")
SEG_COLOR = (0, 0, 255)
SEG_ALPHA = 0.5
CONTROL_KINDS = prompts.ADJUSTMENTS
# gamma applied to [0, 1] intensities (< 1 brightens)
LIGHT_GAMMA = {"LIGHT++": 0.45, "LIGHT+": 0.7, "LIGHT-": 1.45, "LIGHT--": 2.2}
CONTRAST_GAIN = {"CONTRAST+": 1.45, "CONTRAST-": 0.6}


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

"""Classical fusion baselines, for side-by-side comparison with DiTFuse (never used as a fallback).

Why: a learned method is only convincing next to the classical ones on the same pairs and metrics.
Methods (``fuse(method, image1, image2)``; uint8 in, uint8 out, at image 1's size):

* ``average`` — pixel mean.
* ``max`` — pixel-wise max-abs selection; on non-negative 0–255 intensities this is the max.
* ``lp`` — Laplacian-pyramid fusion (Burt & Adelson): 5-tap binomial pyramid, detail levels by
  max-abs coefficient, base level averaged.
* ``gff`` — guided-filtering fusion (Li, Kang, Hu, IEEE TIP 2013): 31×31 mean-filter two-scale
  split, saliency = Gaussian(11, σ=5)-smoothed |3×3 Laplacian|, binary max maps refined by guided
  filters (base r1=45, ε1=0.3; detail r2=7, ε2=1e-6) on 0–1 data. Deviation: the guide is the
  source's luminance (the paper uses the colour guided filter for RGB sources).
* ``mertens`` — exposure fusion (Mertens, Kautz, Van Reeth 2007) with contrast, saturation and
  well-exposedness weights (exponents 1, σ=0.2) blended in a Laplacian pyramid — the algorithm of
  OpenCV's ``createMergeMertens`` re-implemented in numpy (no OpenCV dependency).

Colour policy: two gray sources → gray result; one colour + one gray source (IVIF) → the gray
source is fused with the colour source's luminance (BT.601 YCbCr) and the colour source's chroma
is kept; two colour sources → each RGB channel is fused with weights / selections computed per
channel (``average``, ``max``, ``lp``) or from luminance (``gff``); ``mertens`` works in RGB.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

METHODS = ("average", "max", "lp", "gff", "mertens")
_K5 = np.array([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0


# ----------------------------------------------------------------------------- helpers
def _to_float01(img) -> np.ndarray:
    arr = np.asarray(img)
    if arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[..., :3]
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if np.issubdtype(arr.dtype, np.integer):
        return arr.astype(np.float64) / 255.0
    arr = arr.astype(np.float64)
    return arr / 255.0 if arr.size and arr.max() > 1.0 else arr


def _is_gray(x: np.ndarray) -> bool:
    return x.ndim == 2 or (np.array_equal(x[..., 0], x[..., 1]) and np.array_equal(x[..., 0], x[..., 2]))


def _resize_like(x: np.ndarray, shape) -> np.ndarray:
    if x.shape[:2] == shape[:2]:
        return x
    from PIL import Image

    h, w = shape[:2]
    chans = [x] if x.ndim == 2 else [x[..., c] for c in range(x.shape[2])]
    out = [np.asarray(Image.fromarray(c.astype(np.float32), mode="F").resize((w, h), Image.BICUBIC)) for c in chans]
    return np.clip(out[0] if x.ndim == 2 else np.stack(out, axis=-1), 0, 1).astype(np.float64)


def _rgb_to_ycbcr(x):
    y = 0.299 * x[..., 0] + 0.587 * x[..., 1] + 0.114 * x[..., 2]
    return y, (x[..., 2] - y) * 0.564, (x[..., 0] - y) * 0.713


def _ycbcr_to_rgb(y, cb, cr):
    r = y + 1.403 * cr
    b = y + 1.773 * cb
    g = (y - 0.299 * r - 0.114 * b) / 0.587
    return np.stack([r, g, b], axis=-1)


def pyr_down(x: np.ndarray) -> np.ndarray:
    y = ndimage.correlate1d(ndimage.correlate1d(x, _K5, axis=0, mode="mirror"), _K5, axis=1, mode="mirror")
    return y[::2, ::2]


def pyr_up(x: np.ndarray, shape) -> np.ndarray:
    up = np.zeros(shape[:2], dtype=np.float64)
    up[::2, ::2] = x[: (shape[0] + 1) // 2, : (shape[1] + 1) // 2]
    k = 2 * _K5
    return ndimage.correlate1d(ndimage.correlate1d(up, k, axis=0, mode="mirror"), k, axis=1, mode="mirror")


def gaussian_pyramid(x: np.ndarray, levels: int) -> list[np.ndarray]:
    pyr = [x]
    for _ in range(levels - 1):
        pyr.append(pyr_down(pyr[-1]))
    return pyr


def laplacian_pyramid(x: np.ndarray, levels: int) -> list[np.ndarray]:
    g = gaussian_pyramid(x, levels)
    return [g[i] - pyr_up(g[i + 1], g[i].shape) for i in range(levels - 1)] + [g[-1]]


def collapse(lp: list[np.ndarray]) -> np.ndarray:
    x = lp[-1]
    for lev in reversed(lp[:-1]):
        x = lev + pyr_up(x, lev.shape)
    return x


def _levels(shape, cap: int) -> int:
    return int(max(1, min(cap, np.floor(np.log2(max(min(shape[:2]), 2))) - 2)))


def box_mean(x: np.ndarray, r: int) -> np.ndarray:
    """Mean over a (2r+1)² window truncated at the border (He et al.'s boxfilter / N)."""
    def s(v):
        c = np.cumsum(np.pad(v, ((r + 1, r), (r + 1, r))), axis=0)
        c = c[2 * r + 1 :] - c[: -2 * r - 1]
        c = np.cumsum(c, axis=1)
        return c[:, 2 * r + 1 :] - c[:, : -2 * r - 1]

    return s(x) / s(np.ones_like(x))


def guided_filter(p: np.ndarray, guide: np.ndarray, r: int, eps: float) -> np.ndarray:
    """He, Sun, Tang gray-guide guided filter."""
    mi, mp = box_mean(guide, r), box_mean(p, r)
    a = (box_mean(guide * p, r) - mi * mp) / (box_mean(guide * guide, r) - mi * mi + eps)
    b = mp - a * mi
    return box_mean(a, r) * guide + box_mean(b, r)


# ----------------------------------------------------------------------------- gray cores
def _average(a, b):
    return 0.5 * (a + b)


def _max(a, b):
    return np.where(np.abs(a) >= np.abs(b), a, b)


def _lp(a, b):
    n = _levels(a.shape, 5)
    la, lb = laplacian_pyramid(a, n), laplacian_pyramid(b, n)
    fused = [np.where(np.abs(x) >= np.abs(y), x, y) for x, y in zip(la[:-1], lb[:-1])]
    return collapse(fused + [0.5 * (la[-1] + lb[-1])])


_LAP3 = np.array([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


def gff_weights(guides: list[np.ndarray], r1=45, eps1=0.3, r2=7, eps2=1e-6):
    """GFF base/detail weight maps (each list normalised to sum 1) for gray 0–1 guides."""
    sal = [ndimage.gaussian_filter(np.abs(ndimage.correlate(g, _LAP3, mode="nearest")), 5.0, truncate=1.0,
                                   mode="nearest") for g in guides]  # 11×11 window, σ = 5
    winner = np.argmax(np.stack(sal), axis=0)
    p = [(winner == k).astype(np.float64) for k in range(len(guides))]
    wb = [guided_filter(pk, g, r1, eps1) for pk, g in zip(p, guides)]
    wd = [guided_filter(pk, g, r2, eps2) for pk, g in zip(p, guides)]

    def norm(ws):
        ws = [np.clip(w, 0, None) for w in ws]
        s = sum(ws) + 1e-12
        return [w / s for w in ws]

    return norm(wb), norm(wd)


def _gff_apply(chans_a, chans_b, ga, gb, **kw):
    (wba, wbb), (wda, wdb) = gff_weights([ga, gb], **kw)
    out = []
    for a, b in zip(chans_a, chans_b):
        ba, bb = ndimage.uniform_filter(a, 31, mode="nearest"), ndimage.uniform_filter(b, 31, mode="nearest")
        out.append(wba * ba + wbb * bb + wda * (a - ba) + wdb * (b - bb))
    return out


def _luma(x):
    return x if x.ndim == 2 else _rgb_to_ycbcr(x)[0]


def _mertens(images: list[np.ndarray]) -> np.ndarray:
    """Mertens exposure fusion of 0–1 images (all gray or all RGB)."""
    color = images[0].ndim == 3
    weights = []
    for im in images:
        gray = _luma(im)
        c = np.abs(ndimage.correlate(gray, _LAP3, mode="mirror"))
        if color:
            s = im.std(axis=2)
            e = np.prod(np.exp(-((im - 0.5) ** 2) / (2 * 0.2 ** 2)), axis=2)
        else:
            s = np.ones_like(gray)
            e = np.exp(-((gray - 0.5) ** 2) / (2 * 0.2 ** 2))
        weights.append(c * s * e + 1e-12)
    total = sum(weights)
    weights = [w / total for w in weights]
    n = int(np.floor(np.log2(max(min(images[0].shape[:2]), 2))))
    chans = range(images[0].shape[2]) if color else [None]
    out = []
    for ch in chans:
        acc = None
        for im, w in zip(images, weights):
            x = im if ch is None else im[..., ch]
            lp = laplacian_pyramid(x, n)
            gw = gaussian_pyramid(w, n)
            term = [l * g for l, g in zip(lp, gw)]
            acc = term if acc is None else [s + t for s, t in zip(acc, term)]
        out.append(collapse(acc))
    return out[0] if ch is None else np.stack(out, axis=-1)


# ----------------------------------------------------------------------------- public API
def fuse(method: str, image1, image2) -> np.ndarray:
    """Fuse two images (HxW or HxWx3; uint8, or float 0–1/0–255) → uint8 at image 1's size."""
    if method not in METHODS:
        raise ValueError(f"unknown baseline {method!r}; one of {METHODS}")
    a = _to_float01(image1)
    b = _resize_like(_to_float01(image2), a.shape)
    if a.ndim == 3 and _is_gray(a):
        a = a[..., 0]
    if b.ndim == 3 and _is_gray(b):
        b = b[..., 0]
    if method == "mertens":
        if (a.ndim == 3) != (b.ndim == 3):
            a, b = [np.repeat(x[..., None], 3, 2) if x.ndim == 2 else x for x in (a, b)]
        out = _mertens([a, b])
    elif a.ndim == 2 and b.ndim == 2:
        out = _gray_fuse(method, a, b)
    elif a.ndim == 3 and b.ndim == 3:
        if method == "gff":
            out = np.stack(_gff_apply([a[..., c] for c in range(3)], [b[..., c] for c in range(3)],
                                      _luma(a), _luma(b)), axis=-1)
        else:
            out = np.stack([_gray_fuse(method, a[..., c], b[..., c]) for c in range(3)], axis=-1)
    else:  # one colour, one gray: fuse luminance, keep the colour source's chroma
        colour, gray, colour_first = (a, b, True) if a.ndim == 3 else (b, a, False)
        y, cb, cr = _rgb_to_ycbcr(colour)
        fy = _gray_fuse(method, y, gray) if colour_first else _gray_fuse(method, gray, y)
        out = _ycbcr_to_rgb(fy, cb, cr)
    return np.clip(np.floor(out * 255.0 + 0.5), 0, 255).astype(np.uint8)


def _gray_fuse(method, a, b):
    if method == "average":
        return _average(a, b)
    if method == "max":
        return _max(a, b)
    if method == "lp":
        return _lp(a, b)
    if method == "gff":
        return _gff_apply([a], [b], a, b)[0]
    raise ValueError(method)

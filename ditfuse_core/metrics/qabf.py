"""Qabf / QG: Xydeas–Petrović gradient-based edge-preservation metric. Higher is better (max ≈ 1).

Why: the most reported "how well are the source edges transferred" score. Constants:
Γg=0.9994, κg=−15, σg=0.5, Γα=0.9879, κα=−22, σα=0.8, L=1 (weights = source gradient strength).
Sobel gradients g = √(Sx²+Sy²), orientation α = atan(Sy/Sx); relative strength
G = min(gX,gF)/max(gX,gF), relative orientation A = 1 − |αX−αF|/(π/2);
Q^XF = Γg/(1+e^{κg(G−σg)}) · Γα/(1+e^{κα(A−σα)}); Qabf = Σ(Q^AF gA + Q^BF gB) / Σ(gA+gB).

Two reference conventions, both reproduced (they differ only in degenerate pixels):
* ``qabf`` (registry "Qabf") = VIFB ``metricsQabf``: ``conv2`` 'same' (zero border), α = π/2 where
  Sx = 0, and **the reference quirk kept**: where gX == gF the "ratio" is set to gF instead of 1,
  with gF taken on the 255× rescaled data VIFB works on (it multiplies 0–255 doubles by 255 via
  ``im2double``), so such pixels get Q_g ≈ Γg. Where gX == gF == 0 the weight is 0 anyway.
* ``qabf_liu`` (registry "QG") = Z. Liu's ``metricXydeas`` as corrected by Yu Liu (MFIF): ``filter2``
  'same', 1e-5 added to zero Sx and zero gradient strengths before dividing.
"""

from __future__ import annotations

import numpy as np

from .filters import SOBEL_X, SOBEL_Y, convolve_same, correlate_same

TG, KG, DG = 0.9994, -15.0, 0.5
TA, KA, DA = 0.9879, -22.0, 0.8
_H1 = np.array([[1.0, 2.0, 1.0], [0.0, 0.0, 0.0], [-1.0, -2.0, -1.0]])
_H3 = np.array([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


def _q(G, A):
    return TG / (1.0 + np.exp(KG * (G - DG))) * TA / (1.0 + np.exp(KA * (A - DA)))


def _grad_vifb(x):
    sx, sy = convolve_same(x, _H3), convolve_same(x, _H1)
    g = np.sqrt(sx * sx + sy * sy)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(sx == 0, np.pi / 2, np.arctan(sy / np.where(sx == 0, 1.0, sx)))
    return g, a


def _qxf_vifb(gx, ax, gf, af, quirk_scale):
    with np.errstate(divide="ignore", invalid="ignore"):
        G = np.where(gx > gf, gf / np.where(gx > gf, gx, 1.0),
                     np.where(gx == gf, gf * quirk_scale, gx / np.where(gf > 0, gf, 1.0)))
    A = 1.0 - np.abs(ax - af) / (np.pi / 2)
    return _q(G, A)


def qabf(a: np.ndarray, b: np.ndarray, f: np.ndarray, quirk_scale: float = 255.0) -> float:
    """VIFB Qabf on 0–255 gray data (``quirk_scale`` = VIFB's hidden ×255 for the gX == gF case)."""
    ga, aa = _grad_vifb(a)
    gb, ab = _grad_vifb(b)
    gf, af = _grad_vifb(f)
    qa = _qxf_vifb(ga, aa, gf, af, quirk_scale)
    qb = _qxf_vifb(gb, ab, gf, af, quirk_scale)
    den = np.sum(ga + gb)
    return float(np.sum(qa * ga + qb * gb) / den) if den > 0 else 0.0


def _grad_liu(x):
    sx, sy = correlate_same(x, SOBEL_X), correlate_same(x, SOBEL_Y)
    g = np.sqrt(sx * sx + sy * sy)
    sx = sx + (sx == 0) * 1e-5
    return g, np.arctan(sy / sx)


def qabf_liu(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> float:
    """QG: MFIF's corrected ``metricXydeas`` (same constants, epsilon-guarded ratios)."""
    ga, aa = _grad_liu(a)
    gb, ab = _grad_liu(b)
    gf, af = _grad_liu(f)
    # Same order of in-place guards as the reference: gF gets its 1e-5 after the A-ratio.
    bim = ga > gf
    ga = ga + (ga == 0) * 1e-5
    r1 = gf / ga
    gf = gf + (gf == 0) * 1e-5
    gaf = np.where(bim, r1, ga / gf)
    bim = gb > gf
    gb = gb + (gb == 0) * 1e-5
    r1 = gf / gb
    gf = gf + (gf == 0) * 1e-5
    gbf = np.where(bim, r1, gb / gf)
    qa = _q(gaf, 1.0 - np.abs(aa - af) * 2 / np.pi)
    qb = _q(gbf, 1.0 - np.abs(ab - af) * 2 / np.pi)
    return float(np.sum(qa * ga + qb * gb) / np.sum(ga + gb))

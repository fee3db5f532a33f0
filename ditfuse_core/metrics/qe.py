"""QE: Piella–Heijmans edge-dependent fusion quality index (ICIP 2003). Higher is better (max 1).

Why: the UIQI-based Piella index weighted by source saliency, multiplied by the same index on
edge images. Definition as Yu Liu's corrected ``metricPeilla(·,·,·,3)`` (MFIF): 8×8 box window,
SSIM with K = (1e-6, 1e-6) and L = 255 (≈ UIQI), 'valid' region; λ = σ_A²/(σ_A²+σ_B²) (0.5 added
where both are 0); c_w = max(σ_A², σ_B²)/Σ; Q_w = Σ c_w(λ·SSIM(F,A) + (1−λ)·SSIM(F,B)); the same
on Prewitt edge-magnitude images gives Q_w'; QE = Q_w · Q_w'.
"""

from __future__ import annotations

import numpy as np

from .filters import box_sum_valid, correlate_same

_N = 8
_C = (1e-6 * 255.0) ** 2
_PX = np.array([[1.0, 0.0, -1.0], [1.0, 0.0, -1.0], [1.0, 0.0, -1.0]])
_PY = _PX.T.copy()


def _mean(x):
    return box_sum_valid(x, _N) / (_N * _N)


def _ssim(x, y):
    mx, my = _mean(x), _mean(y)
    sxx = _mean(x * x) - mx * mx
    syy = _mean(y * y) - my * my
    sxy = _mean(x * y) - mx * my
    m = (2 * mx * my + _C) * (2 * sxy + _C) / ((mx * mx + my * my + _C) * (sxx + syy + _C))
    return m, sxx, syy


def _weighted(a, b, f):
    _, sa, sb = _ssim(a, b)
    z = (sa + sb) == 0
    sa, sb = sa + 0.5 * z, sb + 0.5 * z
    lam = sa / (sa + sb)
    m1, _, _ = _ssim(f, a)
    m2, _, _ = _ssim(f, b)
    cw = np.maximum(sa, sb)
    cw = cw / cw.sum()
    return float(np.sum(cw * (lam * m1 + (1 - lam) * m2)))


def _edges(x):
    gx, gy = correlate_same(x, _PX), correlate_same(x, _PY)
    return np.sqrt(gx * gx + gy * gy)


def qe(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> float:
    return _weighted(a, b, f) * _weighted(_edges(a), _edges(b), _edges(f))

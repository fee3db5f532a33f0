"""Qy: Yang et al.'s SSIM-based fusion metric (Inf. Fusion 2008). Higher is better; range [−1, 1]
(SSIM's), in practice [0, 1].

Why: uses source–source similarity to decide, per window, whether F should be a weighted blend of
the sources (similar region) or follow the better-matching source (different region).
Definition as Yu Liu's corrected ``metricYang`` (MFIF): 7×7 Gaussian σ=1.5, C1=C2=2e-16, SSIM
maps on the 'valid' region; where SSIM(A,B) ≥ 0.75: λ·SSIM(A,F) + (1−λ)·SSIM(B,F) with
λ = σ_A²/(σ_A²+σ_B²) (0.5 added to both where both are 0); elsewhere max(SSIM(A,F), SSIM(B,F));
Qy = mean.

Why the flat-window guard (issue #21): σ² = E[x²] − E[x]² cancels catastrophically. In a window that
is exactly constant the true σ² and σ_xy are 0, but in float64 (ours and MATLAB's ``filter2``
alike) they come out as rounding noise of about ±eps·v² ≈ ±1e-11, often negative, i.e.
10⁵ × the constant C = 2e-16 that was meant to dominate there. The SSIM ratio and λ then become
noise/noise (up to ±1e5 per window), and images with large flat (saturated, dark) areas sent Qy to
−2.4 … 201 on real pairs. Here variances and covariances of exactly constant windows are set to
their true value 0 (so two flat windows score the luminance term, 1 for equal levels), and
elsewhere σ² ≥ 0 and |σ_xy| ≤ σ_x·σ_y are enforced (Cauchy–Schwarz), so every SSIM map and λ stay
in range and Qy ∈ [−1, 1]. On 8-bit data a non-constant window has σ² ≥ 1.3e-3, 10⁸ × the noise,
so elsewhere the guard changes values by < 1e-8.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .filters import gaussian1d, sep_correlate

_N = 7
_W = gaussian1d(_N, 1.5)
_C = 2e-16


def _flat(x: np.ndarray) -> np.ndarray:
    """True where the 7×7 window (valid region, as ``sep_correlate``) is exactly constant."""
    h = _N // 2
    same = ndimage.maximum_filter(x, _N) == ndimage.minimum_filter(x, _N)
    return same[h : x.shape[0] - h, h : x.shape[1] - h]


def qy(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> float:
    img = {"a": a, "b": b, "f": f}
    mu = {k: sep_correlate(x, _W) for k, x in img.items()}
    flat = {k: _flat(x) for k, x in img.items()}
    var = {k: np.where(flat[k], 0.0, np.maximum(sep_correlate(img[k] * img[k], _W) - mu[k] * mu[k], 0.0))
           for k in img}

    def smap(p, q):
        cov = sep_correlate(img[p] * img[q], _W) - mu[p] * mu[q]
        bound = np.sqrt(var[p] * var[q])
        cov = np.where(flat[p] | flat[q], 0.0, np.clip(cov, -bound, bound))
        return ((2 * mu[p] * mu[q] + _C) * (2 * cov + _C)
                / ((mu[p] ** 2 + mu[q] ** 2 + _C) * (var[p] + var[q] + _C)))

    m_ab, m_af, m_bf = smap("a", "b"), smap("a", "f"), smap("b", "f")
    sa, sb = var["a"], var["b"]
    z = (sa + sb) == 0
    sa, sb = sa + 0.5 * z, sb + 0.5 * z
    lam = sa / (sa + sb)
    q = np.where(m_ab >= 0.75, lam * m_af + (1 - lam) * m_bf, np.maximum(m_af, m_bf))
    return float(np.mean(q))

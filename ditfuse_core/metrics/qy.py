"""Qy: Yang et al.'s SSIM-based fusion metric (Inf. Fusion 2008). Higher is better (max 1).

Why: uses source–source similarity to decide, per window, whether F should be a weighted blend of
the sources (similar region) or follow the better-matching source (different region).
Definition as Yu Liu's corrected ``metricYang`` (MFIF): 7×7 Gaussian σ=1.5, C1=C2=2e-16, SSIM
maps on the 'valid' region; where SSIM(A,B) ≥ 0.75: λ·SSIM(A,F) + (1−λ)·SSIM(B,F) with
λ = σ_A²/(σ_A²+σ_B²) (0.5 added to both where both are 0); elsewhere max(SSIM(A,F), SSIM(B,F));
Qy = mean. Note the tiny constants make flat windows numerically fragile (as in the reference).
"""

from __future__ import annotations

import numpy as np

from .filters import gaussian1d, sep_correlate

_W = gaussian1d(7, 1.5)
_C = 2e-16


def _ssim_map(x, y):
    mx, my = sep_correlate(x, _W), sep_correlate(y, _W)
    sxx = sep_correlate(x * x, _W) - mx * mx
    syy = sep_correlate(y * y, _W) - my * my
    sxy = sep_correlate(x * y, _W) - mx * my
    with np.errstate(divide="ignore", invalid="ignore"):
        m = (2 * mx * my + _C) * (2 * sxy + _C) / ((mx * mx + my * my + _C) * (sxx + syy + _C))
    return m, sxx, syy


def qy(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> float:
    m_ab, sa, sb = _ssim_map(a, b)
    m_af, _, _ = _ssim_map(a, f)
    m_bf, _, _ = _ssim_map(b, f)
    z = (sa + sb) == 0
    sa, sb = sa + 0.5 * z, sb + 0.5 * z
    lam = sa / (sa + sb)
    similar = m_ab >= 0.75
    q = np.where(similar, lam * m_af + (1 - lam) * m_bf, np.maximum(m_af, m_bf))
    return float(np.mean(q))

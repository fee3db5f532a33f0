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


def qy(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> float:
    mu = {k: sep_correlate(x, _W) for k, x in (("a", a), ("b", b), ("f", f))}
    img = {"a": a, "b": b, "f": f}
    var = {k: sep_correlate(img[k] * img[k], _W) - mu[k] * mu[k] for k in img}

    def smap(p, q):
        cov = sep_correlate(img[p] * img[q], _W) - mu[p] * mu[q]
        with np.errstate(divide="ignore", invalid="ignore"):
            return ((2 * mu[p] * mu[q] + _C) * (2 * cov + _C)
                    / ((mu[p] ** 2 + mu[q] ** 2 + _C) * (var[p] + var[q] + _C)))

    m_ab, m_af, m_bf = smap("a", "b"), smap("a", "f"), smap("b", "f")
    sa, sb = var["a"], var["b"]
    z = (sa + sb) == 0
    sa, sb = sa + 0.5 * z, sb + 0.5 * z
    lam = sa / (sa + sb)
    q = np.where(m_ab >= 0.75, lam * m_af + (1 - lam) * m_bf, np.maximum(m_af, m_bf))
    return float(np.mean(q))

"""MS-SSIM (Wang, Simoncelli, Bovik 2003) of F against each source, averaged over the sources.

Why: single-scale SSIM over-weights fine texture; MS-SSIM is the multi-scale version.
Definition as Wang's ``msssim.m``: 5 scales, weights (0.0448, 0.2856, 0.3001, 0.2363, 0.1333),
11×11 Gaussian σ=1.5, K=(0.01, 0.03), L=255; between scales a 2×2 mean filter (symmetric border)
and keep every second pixel; MS-SSIM = Π_{j<M} cs_j^{β_j} · ssim_M^{β_M}. Deviations, stated:
negative per-scale means are clipped at 0 (MATLAB would go complex), and images too small for 5
scales (min side < 176 px) use as many scales as fit with the weights renormalised.
Reported: ½[MS-SSIM(A,F) + MS-SSIM(B,F)]. Higher is better; MS-SSIM(A,A) = 1.
"""

from __future__ import annotations

import numpy as np

from .ssim import ssim_components, ssim_components_cached

WEIGHTS = np.array([0.0448, 0.2856, 0.3001, 0.2363, 0.1333])


def _down(x: np.ndarray) -> np.ndarray:
    p = np.pad(x, ((0, 1), (0, 1)), mode="symmetric")
    y = 0.25 * (p[:-1, :-1] + p[1:, :-1] + p[:-1, 1:] + p[1:, 1:])
    return y[::2, ::2]


def ms_ssim_pair(x: np.ndarray, y: np.ndarray) -> float:
    levels = 5
    while levels > 1 and min(x.shape) < 11 * 2 ** (levels - 1):
        levels -= 1
    w = WEIGHTS[:levels] / WEIGHTS[:levels].sum()
    out = 1.0
    for j in range(levels):
        lum, cs = ssim_components_cached(x, y) if j == 0 else ssim_components(x, y)
        if j == levels - 1:
            val = max(float(np.mean(lum * cs)), 0.0)
        else:
            val = max(float(np.mean(cs)), 0.0)
            x, y = _down(x), _down(y)
        out *= val ** w[j]
    return float(out)


def ms_ssim(a, b, f) -> float:
    return 0.5 * (ms_ssim_pair(a, f) + ms_ssim_pair(b, f))

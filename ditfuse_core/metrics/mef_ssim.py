"""MEF-SSIM: Ma, Zeng & Wang's quality index for multi-exposure fusion (IEEE TIP 2015). Higher is better.

Why: for exposure fusion there is no single reference; MEF-SSIM builds a desired patch from the
sources and scores F's structure against it. Re-implemented from the paper, vectorised with box
filters (no reference values are shipped, so this one is validated by its properties only):
* 11×11 patches ('valid'), x̃_k = x_k − μ_k, contrast c_k = ‖x̃_k‖, desired contrast ĉ = max_k c_k;
* structural consistency R = ‖Σ_k x̃_k‖ / Σ_k ‖x̃_k‖, p = tan(πR/2) (capped at 10), weights
  w_k = c_k^p; desired structure s̄ = Σ w_k x̃_k/c_k / Σ w_k, x̂ = ĉ·s̄/‖s̄‖;
* q = (2σ_x̂F + C)/(σ_x̂² + σ_F² + C), C = (0.03·255)² (luminance is deliberately not compared);
* three scales (2×2 mean + decimation between them), Q = Π Q_l^{β_l}, β = (0.0448, 0.2856, 0.3001)
  renormalised.
Sources and F are gray 0–255; any number of sources ≥ 2 is accepted via ``mef_ssim_seq``.
"""

from __future__ import annotations

import numpy as np

from .filters import box_sum_valid
from .ms_ssim import _down

BETAS = np.array([0.0448, 0.2856, 0.3001])
_N = 11
_C = (0.03 * 255.0) ** 2
_EPS = 1e-12


def _single(seq, f) -> float:
    n = float(_N * _N)
    mean = lambda x: box_sum_valid(x, _N) / n  # noqa: E731
    mus = [mean(x) for x in seq]
    muf = mean(f)
    cov = [[mean(x * y) - mx * my for y, my in zip(seq, mus)] for x, mx in zip(seq, mus)]
    covf = [mean(x * f) - mx * muf for x, mx in zip(seq, mus)]
    varf = np.maximum(mean(f * f) - muf * muf, 0)
    K = len(seq)
    c = [np.sqrt(np.maximum(n * cov[k][k], 0)) for k in range(K)]
    total_var = sum(cov[k][l] for k in range(K) for l in range(K))
    R = np.sqrt(np.maximum(n * total_var, 0)) / (sum(c) + _EPS)
    R = np.clip(R, 0.0, 1.0 - 1e-12)
    p = np.minimum(np.tan(np.pi / 2 * R), 10.0)
    w = [(ck / _N + _EPS) ** p for ck in c]
    wsum = sum(w)
    coef = [w[k] / wsum / (c[k] + _EPS) for k in range(K)]  # s̄ = Σ coef_k x̃_k
    norm2 = n * sum(coef[k] * coef[l] * cov[k][l] for k in range(K) for l in range(K))
    norm = np.sqrt(np.maximum(norm2, 0))
    chat = np.maximum.reduce(c)
    scale = np.where(norm > 0, chat / np.where(norm > 0, norm, 1.0), 0.0)
    sxf = scale * sum(coef[k] * covf[k] for k in range(K))
    sxx = np.where(norm > 0, chat * chat / n, 0.0)
    q = (2 * sxf + _C) / (sxx + varf + _C)
    return float(np.mean(q))


def mef_ssim_seq(seq, f) -> float:
    seq = [np.asarray(x, dtype=np.float64) for x in seq]
    f = np.asarray(f, dtype=np.float64)
    levels = 3
    while levels > 1 and min(f.shape) < _N * 2 ** (levels - 1):
        levels -= 1
    betas = BETAS[:levels] / BETAS[:levels].sum()
    out = 1.0
    for lev in range(levels):
        out *= max(_single(seq, f), 0.0) ** betas[lev]
        if lev < levels - 1:
            seq, f = [_down(x) for x in seq], _down(f)
    return float(out)


def mef_ssim(a, b, f) -> float:
    return mef_ssim_seq([a, b], f)

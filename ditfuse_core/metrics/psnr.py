"""PSNR of F against the sources: the standard form and VIFB's non-standard PSNR/RMSE.

Why: VIFB's ``Psnr`` uses d(X,F) = √Σ(X−F)² / (MN), which is not a mean squared error, so its
values sit near 58 dB and are not comparable with a standard PSNR. Both are provided:
* "PSNR" = 10·log10(255² / MSE), MSE = ½[mean((A−F)²) + mean((B−F)²)] (0–255). Higher is better;
  infinite when A = B = F.
* "PSNR_vifb" = 20·log10(255/√D), D = ½[d(A,F)+d(B,F)]; "RMSE_vifb" = D (lower is better).
"""

from __future__ import annotations

import numpy as np


def psnr(a, b, f) -> float:
    mse = 0.5 * (np.mean((a - f) ** 2) + np.mean((b - f) ** 2))
    return float("inf") if mse == 0 else float(10.0 * np.log10(255.0 ** 2 / mse))


def _d_vifb(x, f):
    return np.sqrt(np.sum((x - f) ** 2)) / x.size


def rmse_vifb(a, b, f) -> float:
    return float(0.5 * (_d_vifb(a, f) + _d_vifb(b, f)))


def psnr_vifb(a, b, f) -> float:
    d = rmse_vifb(a, b, f)
    return float("inf") if d == 0 else float(20.0 * np.log10(255.0 / np.sqrt(d)))

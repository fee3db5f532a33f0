"""Correlation scores: CC (mean Pearson correlation with the sources) and SCD (Aslantas & Bendes).

Why: both measure how much of each source's signal survives in F, on 0–255 gray data.
* CC = ½[r(A,F) + r(B,F)], r = Pearson correlation (MATLAB ``corr2``). Higher is better; CC(A,A,A)=1.
* SCD = r(F−B, A) + r(F−A, B) — the "sum of the correlations of differences" (2015). Higher is better.
A constant image has no defined correlation; it contributes 0 here.
"""

from __future__ import annotations

import numpy as np


def corr2(x: np.ndarray, y: np.ndarray) -> float:
    xm, ym = x - x.mean(), y - y.mean()
    den = np.sqrt(np.sum(xm * xm) * np.sum(ym * ym))
    return float(np.sum(xm * ym) / den) if den > 0 else 0.0


def correlation_coefficient(a, b, f) -> float:
    return 0.5 * (corr2(a, f) + corr2(b, f))


def scd(a, b, f) -> float:
    return corr2(f - b, a) + corr2(f - a, b)

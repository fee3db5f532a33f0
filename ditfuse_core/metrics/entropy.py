"""Histogram entropies: EN (information content of F) and CE (cross-entropy of the sources vs F).

Why: EN is the most reported no-reference fusion score; CE is VIFB's histogram-divergence score.
Both use a 256-bin histogram of ``floor(x)`` on 0–255 data and log base 2 (bits).
"""

from __future__ import annotations

import numpy as np


def histogram256(x: np.ndarray) -> np.ndarray:
    """Probabilities of the 256 gray levels, bin = floor(x) clipped to 0..255."""
    idx = np.clip(np.floor(x), 0, 255).astype(np.int64).ravel()
    return np.bincount(idx, minlength=256).astype(np.float64) / idx.size


def entropy(f: np.ndarray) -> float:
    """EN = −Σ p·log2 p over F's 256-bin histogram (bits). Higher is better; a constant image gives 0."""
    p = histogram256(f)
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


def _ce(x: np.ndarray, f: np.ndarray) -> float:
    px, pf = histogram256(x), histogram256(f)
    m = (px > 0) & (pf > 0)
    return float((px[m] * np.log2(px[m] / pf[m])).sum())


def cross_entropy(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> float:
    """CE = ½[CE(A,F) + CE(B,F)], CE(X,F) = Σ p_X log2(p_X/p_F) over bins non-zero in both
    (VIFB ``Cross_entropy``). Lower is better; 0 when A = B = F."""
    return 0.5 * (_ce(a, f) + _ce(b, f))

"""Gradient sharpness scores of F: AG (average gradient) and EI (edge intensity).

Why: both reward detail in the fused image without looking at the sources.
* AG = Σ√((Gx²+Gy²)/2) / ((M−1)(N−1)) with Gx, Gy from MATLAB ``gradient`` (central differences,
  one-sided at the borders) — VIFB's ``Avg_gradient`` (note the (M−1)(N−1) denominator although
  the sum runs over all M·N pixels).
* EI = mean √(Sx²+Sy²), Sx/Sy the 3×3 Sobel responses with replicated borders (VIFB
  ``Edge_intensity``).
Both on 0–255 data; higher is better.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .filters import SOBEL_X, SOBEL_Y


def average_gradient(f: np.ndarray) -> float:
    gy, gx = np.gradient(f)
    s = np.sqrt((gx * gx + gy * gy) / 2.0)
    return float(s.sum() / ((f.shape[0] - 1) * (f.shape[1] - 1)))


def edge_intensity(f: np.ndarray) -> float:
    sx = ndimage.correlate(f, SOBEL_X, mode="nearest")
    sy = ndimage.correlate(f, SOBEL_Y, mode="nearest")
    return float(np.mean(np.sqrt(sx * sx + sy * sy)))

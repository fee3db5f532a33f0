"""SF: spatial frequency (overall activity level of F).

Why: papers normalise SF differently; here, as in VIFB, both squared-difference sums are divided
by M·N (the number of pixels), not by the number of differences:
SF = √(RF + CF), RF = Σ(F[i,j]−F[i,j−1])²/(MN), CF = Σ(F[i,j]−F[i−1,j])²/(MN). Higher is better.
"""

from __future__ import annotations

import numpy as np


def spatial_frequency(f: np.ndarray) -> float:
    """SF of a 2-D image on 0–255 (VIFB normalisation)."""
    mn = f.shape[0] * f.shape[1]
    rf = np.sum(np.diff(f, axis=1) ** 2) / mn
    cf = np.sum(np.diff(f, axis=0) ** 2) / mn
    return float(np.sqrt(rf + cf))

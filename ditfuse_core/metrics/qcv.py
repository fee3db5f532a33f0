"""Qcv: Chen–Varshney regional human-perception metric (Inf. Fusion 2007). LOWER is better (0 = ideal).

Why: a saliency-weighted, CSF-filtered squared difference between each source and F.
Definition as Z. Liu's ``metricChen`` (used by VIFB and MFIF): images ``normalize1``-ed;
edge strength from 3×3 Sobel (``filter2`` 'same'); region saliency λ_X = Σ_block g_X^5 over
16×16 blocks (partial blocks zero-padded, as ``blkproc``); the differences A−F and B−F are filtered
with the Mannos–Sakrison CSF 2.6(0.0192+0.144r)e^{−(0.144r)^1.1} on the ``freqspace`` grid scaled
by (W/8, H/8); D_X = block mean of the squared filtered difference (over 256 pixels);
Qcv = Σ(λ_A D_A + λ_B D_B) / Σ(λ_A + λ_B).
"""

from __future__ import annotations

import numpy as np

from .convert import normalize1
from .filters import SOBEL_X, SOBEL_Y, apply_centered_filter, block_reduce_sum, correlate_same, freq_radius

BLOCK = 16
ALPHA = 5


def _saliency(x):
    gx, gy = correlate_same(x, SOBEL_X), correlate_same(x, SOBEL_Y)
    return block_reduce_sum(np.sqrt(gx * gx + gy * gy) ** ALPHA, BLOCK)


def qcv(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> float:
    a, b, f = normalize1(a), normalize1(b), normalize1(f)
    h, w = f.shape
    la, lb = _saliency(a), _saliency(b)
    r = freq_radius((h, w), h / 8.0, w / 8.0)
    csf = 2.6 * (0.0192 + 0.144 * r) * np.exp(-((0.144 * r) ** 1.1))
    da = block_reduce_sum(apply_centered_filter(a - f, csf) ** 2, BLOCK) / BLOCK ** 2
    db = block_reduce_sum(apply_centered_filter(b - f, csf) ** 2, BLOCK) / BLOCK ** 2
    den = np.sum(la + lb)
    return float(np.sum(la * da + lb * db) / den) if den > 0 else 0.0

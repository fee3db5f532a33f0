"""Qcb: Chen–Blum human-perception fusion metric (Image Vis. Comput. 2009). Higher is better (max 1).

Why: a contrast-sensitivity-weighted measure of how much local contrast of each source survives.
Definition as Z. Liu's ``metricChenBlum`` (used unchanged by VIFB and MFIF): each image is
``normalize1``-ed (min–max to 0–255, rounded); filtered in the frequency domain with the DoG CSF
S(r) = e^{−(r/15.3870)²} − 0.7622·e^{−(r/1.3456)²} on the ``freqspace`` grid scaled by (W/30, H/30);
local contrast C = |filter2(G₁,I)/filter2(G₂,I) − 1| with unnormalised 31×31 Gaussians
σ=2 and σ=4 (zero border); masked contrast C' = C³/(C²+1e-4); preservation
Q_XF = min(C'_X, C'_F)/max(...); saliency λ_X = C'_X²/(C'_A²+C'_B²); Qcb = mean(λ_A Q_AF + λ_B Q_BF).
"""

from __future__ import annotations

import numpy as np

from .convert import normalize1
from .filters import apply_centered_filter, freq_radius, sep_correlate


def _g1d(sigma: float) -> np.ndarray:
    x = np.arange(-15, 16, dtype=np.float64)
    return np.exp(-(x * x) / (2 * sigma * sigma)) / np.sqrt(2 * np.pi * sigma * sigma)


_G1, _G2 = _g1d(2.0), _g1d(4.0)


def _masked_contrast(x: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        c = np.abs(sep_correlate(x, _G1, "same") / sep_correlate(x, _G2, "same") - 1.0)
    return c ** 3 / (c * c + 1e-4)


def qcb(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> float:
    h, w = f.shape
    r = freq_radius((h, w), h / 30.0, w / 30.0)
    sd = np.exp(-((r / 15.3870) ** 2)) - 0.7622 * np.exp(-((r / 1.3456) ** 2))
    ca, cb, cf = (_masked_contrast(apply_centered_filter(normalize1(x), sd)) for x in (a, b, f))
    with np.errstate(divide="ignore", invalid="ignore"):
        qaf = np.where(ca < cf, ca / cf, cf / ca)
        qbf = np.where(cb < cf, cb / cf, cf / cb)
        den = ca * ca + cb * cb
        q = (ca * ca * qaf + cb * cb * qbf) / den
    return float(np.nanmean(q))

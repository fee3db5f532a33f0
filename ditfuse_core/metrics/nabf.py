"""Nabf: B. K. Shreyamsha Kumar's modified fusion-artefact measure (2013). Lower is better (0 = none).

Why: Qabf rewards edge transfer but not the absence of invented edges; Nabf is the weighted share
of pixels where F has a stronger gradient than both sources (artefacts). Kumar's definition
(his ``objective_fusion_perform_fn``), on 0–255 data:
Sobel/8 gradients with mirrored borders; relative strength g^XF = min/max (0 if either is 0);
relative orientation a^XF = ||αX−αF| − π/2|·2/π with α = atan(gv/gh) (0 where both are 0);
Q^XF = √(Q_g·Q_a), Q_g = 0.9999/(1+e^{−19(g^XF−0.5)}), Q_a = 0.9995/(1+e^{−22(a^XF−0.5)});
weights w_X = g_X^1.5 where g_X ≥ 2, else 0.001;
Nabf = Σ n·[(1−Q^AF)w_A + (1−Q^BF)w_B] / Σ(w_A+w_B), n = 1 where gF > gA and gF > gB.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

_KV = np.array([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8.0
_KH = _KV.T.copy()


def _grad(x):
    gv = ndimage.convolve(x, _KV, mode="mirror")
    gh = ndimage.convolve(x, _KH, mode="mirror")
    g = np.sqrt(gv * gv + gh * gh)
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where((gv == 0) & (gh == 0), 0.0, np.arctan(gv / gh))
    return g, a


def _qxf(gx, ax, gf, af):
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where((gx == 0) | (gf == 0), 0.0, np.minimum(gx, gf) / np.maximum(gx, gf))
    r = np.nan_to_num(r)
    o = np.abs(np.abs(ax - af) - np.pi / 2) * 2 / np.pi
    qg = 0.9999 / (1.0 + np.exp(-19.0 * (r - 0.5)))
    qa = 0.9995 / (1.0 + np.exp(-22.0 * (o - 0.5)))
    return np.sqrt(qg * qa)


def nabf(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> float:
    ga, aa = _grad(a)
    gb, ab = _grad(b)
    gf, af = _grad(f)
    qa, qb = _qxf(ga, aa, gf, af), _qxf(gb, ab, gf, af)
    wa = np.where(ga >= 2.0, ga ** 1.5, 0.001)
    wb = np.where(gb >= 2.0, gb ** 1.5, 0.001)
    na = (gf > ga) & (gf > gb)
    return float(np.sum(na * ((1 - qa) * wa + (1 - qb) * wb)) / np.sum(wa + wb))

"""Mutual-information family: MI (nats default, bits available), NMI/QMI (Hossny), QNCIE (Wang).

Why: "MI" means different things in different papers. The conventions here:

* ``mutual_information`` (registry "MI") = MI(A,F) + MI(B,F) in **nats** (natural log) — VIFB's
  ``Mutinf`` and the sklearn-based evaluators used by recent IVIF papers. Each image is first
  min–max stretched to [0,1] and re-quantised with round(x·255) (MATLAB int16 rounding) before a
  256×256 joint histogram; for uint8 images already spanning 0–255 this is the identity.
  "MI_bits" is the same quantity divided by ln 2. Higher is better.
* ``nmi_hossny`` (registry "QMI") = 2[I(A,F)/(H(A)+H(F)) + I(B,F)/(H(B)+H(F))] (Hossny et al.
  2008) with Z. Liu's ``normalize1`` (min–max to 0–255, rounded) and log2 — the MFIF/Lytro QMI.
  Range 0..2, higher is better.
* ``ncie`` (registry "QNCIE") = nonlinear correlation information entropy (Q. Wang et al. 2005):
  1 − H_R of the eigenvalues of the 3×3 nonlinear-correlation matrix of A, B, F (256 bins,
  log base 256). Range 0..1, higher is better.
"""

from __future__ import annotations

import numpy as np

from .convert import normalize1


def _levels_vifb(x: np.ndarray) -> np.ndarray:
    lo, hi = x.min(), x.max()
    if hi == lo:
        return np.zeros(x.shape, dtype=np.int64)
    y = (x - lo) / (hi - lo) * 255.0
    return np.floor(y + 0.5).astype(np.int64)  # int16() rounds half away from zero (y >= 0)


def _levels_int(x: np.ndarray) -> np.ndarray:
    return np.clip(np.floor(x + 0.5), 0, 255).astype(np.int64)


def joint_entropies(x: np.ndarray, y: np.ndarray, log=np.log2):
    """(H(x), H(y), H(x,y)) of two integer level maps 0..255 with the given logarithm."""
    h = np.bincount((x.ravel() << 8) | y.ravel(), minlength=65536).astype(np.float64)
    h /= h.sum()
    hxy = h.reshape(256, 256)
    px, py = hxy.sum(axis=1), hxy.sum(axis=0)

    def ent(p):
        p = p[p > 0]
        return float(-(p * log(p)).sum())

    return ent(px), ent(py), ent(h)


def _mi(x, y, log):
    hx, hy, hxy = joint_entropies(x, y, log)
    return hx + hy - hxy


def mutual_information(a: np.ndarray, b: np.ndarray, f: np.ndarray, unit: str = "nats") -> float:
    """MI(A,F) + MI(B,F) with VIFB's min–max re-quantisation; unit 'nats' (default) or 'bits'."""
    log = {"nats": np.log, "bits": np.log2}[unit]
    la, lb, lf = _levels_vifb(a), _levels_vifb(b), _levels_vifb(f)
    return _mi(la, lf, log) + _mi(lb, lf, log)


def mutual_information_bits(a, b, f) -> float:
    return mutual_information(a, b, f, unit="bits")


def nmi_hossny(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> float:
    """Hossny's normalised MI (QMI), log2, after ``normalize1``."""
    la, lb, lf = (_levels_int(normalize1(x)) for x in (a, b, f))
    ha, hf1, haf = joint_entropies(la, lf)
    hb, hf2, hbf = joint_entropies(lb, lf)
    return 2.0 * ((ha + hf1 - haf) / (hf1 + ha) + (hb + hf2 - hbf) / (hf2 + hb))


def _ncc(x, y):
    hx, hy, hxy = joint_entropies(x, y)
    return (hx + hy - hxy) / 8.0  # log2(256) = 8


def ncie(a: np.ndarray, b: np.ndarray, f: np.ndarray) -> float:
    """QNCIE (Wang 2005, Z. Liu's implementation): 1 + Σ (λ/3) log_256(λ/3)."""
    la, lb, lf = (_levels_int(normalize1(x)) for x in (a, b, f))
    nab, naf, nbf = _ncc(la, lb), _ncc(la, lf), _ncc(lb, lf)
    r = np.linalg.eigvalsh(np.array([[1.0, nab, naf], [nab, 1.0, nbf], [naf, nbf, 1.0]]))
    r = r[r > 0]
    hr = -float(np.sum(r * np.log2(r / 3.0) / 3.0)) / 8.0
    return 1.0 - hr

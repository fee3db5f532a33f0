"""FMI: feature mutual information (Haghighat et al. 2011), fast-FMI form (Haghighat & Razian 2014).

Why: a no-reference score of how much feature information (pixels, DCT, wavelet or edges) of
each source is in F. Definition as the authors' ``fmi.m`` (fast-FMI), re-implemented vectorised
(no per-window Python loop):
* feature maps: 'pixel' = the image itself ('none' in fmi.m); 'dct' = orthonormal 2-D DCT-II of the
  whole image (``dct2``); 'wavelet' = one-level discrete Meyer DWT [cA cH; cV cD] with symmetric
  extension, rescaled to [0,1] (PyWavelets' 62-tap ``dmey``; MATLAB's ``dmey`` has 102 taps, so
  this feature is not bit-identical to MATLAB); 'edge' = binary Sobel edge map as MATLAB
  ``edge(I)`` (threshold √(4·mean|∇|²), directional thinning);
* 3×3 sliding windows ('valid'); in each window, if the source and F windows are identical the
  NMI is 1, else each window is min–max normalised (constant → ones), turned into a PDF over its 9
  pixels (column-major order), the joint PDF is built by Nelsen's method from the Fréchet bound
  (upper bound for correlation c ≥ 0, lower for c < 0) mixed with independence by φ = c/ρ_bound,
  and NMI = 2·I/(H_X + H_F) (log2; negative joint masses contribute −p·log2|p| as ``real()`` does);
* FMI = mean over windows of ½(NMI_AF + NMI_BF). Range 0..1, higher is better; FMI(A,A,A) = 1.

Implementation (speed): ``fmi`` works on all windows at once in a "one row per window pixel"
layout ((9, n) arrays, so every per-window sum is 8 vector adds), in chunks that fit the L2 cache.
The fused image's per-window terms (PDF, entropy, CDF, spread) are computed once and shared by
both sources; the merge of the two CDFs' breakpoints uses ranks from one 9×9 comparison per window
instead of a sort; windows identical to F are skipped (NMI = 1); binary feature maps (edges) are
evaluated once per distinct (source window, F window) pattern. ``fmi_reference`` keeps the previous
row-per-window implementation (tests check both agree, and that the per-window NMI equals the
literal 9×9 form ``_nmi_dense``).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy import ndimage
from scipy.fft import dctn

FEATURES = ("pixel", "dct", "wavelet", "edge")
_CHUNK = 1 << 12
_IDX = np.arange(1, 10, dtype=np.float64)
_MOM = np.stack([_IDX, _IDX**2])
_INV_LN2 = 1.0 / np.log(2.0)
_POW2 = 2.0 ** np.arange(9)
_THREADS = min(2, os.cpu_count() or 1)  # worker threads of the fast path (results do not depend on it)


def _edge(x: np.ndarray) -> np.ndarray:
    op = np.array([[1.0, 2.0, 1.0], [0.0, 0.0, 0.0], [-1.0, -2.0, -1.0]]) / 8.0
    bx = ndimage.correlate(x, op.T, mode="nearest")
    by = ndimage.correlate(x, op, mode="nearest")
    b = bx * bx + by * by
    cutoff = 4.0 * b.mean()
    bx, by = np.abs(bx), np.abs(by)
    z_col = np.zeros((b.shape[0], 1))
    z_row = np.zeros((1, b.shape[1]))
    left, right = np.hstack([z_col, b[:, :-1]]), np.hstack([b[:, 1:], z_col])
    up, down = np.vstack([z_row, b[:-1]]), np.vstack([b[1:], z_row])
    e = (b > cutoff) & (((bx >= by) & (b >= left) & (b > right)) | ((by >= bx) & (b >= up) & (b > down)))
    return e.astype(np.float64)


def _wavelet(x: np.ndarray) -> np.ndarray:
    import pywt  # PyWavelets (dependency of the metrics)

    ca, (ch, cv, cd) = pywt.dwt2(x, "dmey", mode="symmetric")
    m = np.block([[ca, ch], [cv, cd]])
    lo, hi = m.min(), m.max()
    return np.ones_like(m) if hi == lo else (m - lo) / (hi - lo)


def feature_map(x: np.ndarray, feature: str) -> np.ndarray:
    if feature == "pixel":
        return x
    if feature == "dct":
        return dctn(x, type=2, norm="ortho")
    if feature == "wavelet":
        return _wavelet(x)
    if feature == "edge":
        return _edge(x)
    raise ValueError(f"unknown FMI feature {feature!r}; one of {FEATURES}")


# ---- reference path (previous implementation, one row per window; used by the tests) ----


def _windows(x: np.ndarray) -> np.ndarray:
    v = sliding_window_view(x, (3, 3))
    return np.ascontiguousarray(v.swapaxes(-1, -2)).reshape(-1, 9)  # column-major like x(:)


def _pdf(w: np.ndarray) -> np.ndarray:
    lo, hi = w.min(axis=1, keepdims=True), w.max(axis=1, keepdims=True)
    rng = hi - lo
    n = np.where(rng > 0, (w - lo) / np.where(rng > 0, rng, 1.0), 1.0)
    return n / n.sum(axis=1, keepdims=True)


def _ent(p: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(p != 0, -p * np.log2(np.abs(p)), 0.0)
    return t.reshape(p.shape[0], -1).sum(axis=1)


def _rect(m: np.ndarray) -> np.ndarray:
    """Probability mass of each (i, j) cell from a bivariate CDF table m (n, 9, 9)."""
    return np.diff(np.diff(m, axis=1, prepend=0.0), axis=2, prepend=0.0)


def _nmi_dense(pa: np.ndarray, pf: np.ndarray) -> np.ndarray:
    """Literal 9×9 form of fmi.m's per-window NMI (reference for ``_nmi``; slower)."""
    ca, cf = np.cumsum(pa, axis=1), np.cumsum(pf, axis=1)
    c, sda, sdf = _corr_sd(pa, pf)
    indep = pf[:, :, None] * pa[:, None, :]
    hj = np.empty(len(c))
    for upper in (True, False):
        sel = (c >= 0) if upper else (c < 0)
        if not sel.any():
            continue
        F, A = cf[sel][:, :, None], ca[sel][:, None, :]
        bound = np.minimum(F, A) if upper else np.maximum(F + A - 1.0, 0.0)
        cov = bound.sum(axis=(1, 2)) - cf[sel].sum(axis=1) * ca[sel].sum(axis=1)
        k = _mix(c[sel], cov, sda[sel] * sdf[sel])[:, None, None]
        hj[sel] = _ent(k * _rect(bound) + (1.0 - k) * indep[sel])
    return _finish(pa, pf, hj)


def _corr_sd(pa, pf):
    at, ft = pa - pa.mean(axis=1, keepdims=True), pf - pf.mean(axis=1, keepdims=True)
    num = (at * ft).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        c = np.where(num == 0, 0.0, num / np.sqrt((at * at).sum(axis=1) * (ft * ft).sum(axis=1)))
    sda = np.sqrt(np.maximum(pa @ (_IDX ** 2) - (pa @ _IDX) ** 2, 0.0))
    sdf = np.sqrt(np.maximum(pf @ (_IDX ** 2) - (pf @ _IDX) ** 2, 0.0))
    return c, sda, sdf


def _mix(c, cov, s):
    """φ (or θ) = c / (cov/s); 0 where undefined, as in fmi.m."""
    ok = (s > 0) & (c != 0) & (cov != 0)
    k = np.zeros(len(c))
    k[ok] = c[ok] / (cov[ok] / s[ok])
    return k


def _finish(pa, pf, hj):
    ha, hf = _ent(pa), _ent(pf)
    mi = ha + hf - hj
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(mi == 0, 0.0, 2.0 * mi / (ha + hf))


def _g(x):
    return -x * np.log2(np.abs(x) + 1e-300)


def _nmi(pa: np.ndarray, pf: np.ndarray) -> np.ndarray:
    """Per-window NMI, same value as ``_nmi_dense`` but with O(18) work per window.

    The Fréchet-bound copula puts mass only on ≤17 of the 81 cells (the overlaps of the two CDFs'
    steps, found by merging the sorted breakpoints), so the joint entropy is the closed form of
    Σ g((1−φ)·p_f·p_a) over all cells plus a correction on those cells, g(x) = −x·log2|x|.
    """
    c, sda, sdf = _corr_sd(pa, pf)
    ha, hf = _ent(pa), _ent(pf)
    hj = np.empty(len(c))
    cf = np.cumsum(pf, axis=1)
    rows = np.arange(len(c))[:, None]
    for upper in (True, False):
        sel = (c >= 0) if upper else (c < 0)
        if not sel.any():
            continue
        pq = pa[sel] if upper else pa[sel][:, ::-1]  # W-bound = M-bound against the reversed source
        fq, qc, pfs = cf[sel], np.cumsum(pq, axis=1), pf[sel]
        t = np.concatenate([fq, qc], axis=1)
        order = np.argsort(t, axis=1, kind="stable")
        ts = np.take_along_axis(t, order, axis=1)
        is_f = order < 9
        inc_f = np.cumsum(is_f, axis=1)
        inc_q = np.arange(1, 19) - inc_f
        r = rows[: len(ts)]
        i = np.minimum(inc_f - is_f, 8)
        j = np.minimum(inc_q - ~is_f, 8)
        seg = np.diff(ts, axis=1, prepend=0.0)
        prod = pfs[r, i] * pq[r, j]
        sum_min = np.sum(ts * np.where(is_f, 9 - inc_q, 9 - inc_f), axis=1)  # Σ_ij min(F_i, Q_j)
        sf, sa = fq.sum(axis=1), qc.sum(axis=1) if upper else np.cumsum(pa[sel], axis=1).sum(axis=1)
        # upper: Σ min(F_i, A_j) − ΣFΣA;  lower: Σ max(F_i + A_j − 1, 0) − ΣFΣA = 10ΣF − Σ min(F_i, Ā_j) − ΣFΣA
        cov = (sum_min if upper else 10.0 * sf - sum_min) - sf * sa
        k = _mix(c[sel], cov, sda[sel] * sdf[sel])
        q = 1.0 - k
        base = q * (ha[sel] + hf[sel]) - q * np.log2(np.abs(q) + 1e-300)
        qp = q[:, None] * prod
        corr = np.sum(np.where(seg != 0, _g(k[:, None] * seg + qp) - _g(qp), 0.0), axis=1)
        hj[sel] = base + corr
    with np.errstate(divide="ignore", invalid="ignore"):
        mi = ha + hf - hj
        return np.where(mi == 0, 0.0, 2.0 * mi / (ha + hf))


def _nmi_map(wx: np.ndarray, wf: np.ndarray) -> np.ndarray:
    out = np.ones(len(wx))
    todo = np.flatnonzero(~np.all(wx == wf, axis=1))
    for s in range(0, len(todo), _CHUNK):
        idx = todo[s : s + _CHUNK]
        out[idx] = _nmi(_pdf(wx[idx]), _pdf(wf[idx]))
    return out


def fmi_reference(a: np.ndarray, b: np.ndarray, f: np.ndarray, feature: str = "pixel") -> float:
    """The previous (row-per-window) implementation of ``fmi``: slower, kept as its test reference."""
    wa, wb, wf = (_windows(feature_map(x, feature)) for x in (a, b, f))
    return float(np.mean(0.5 * (_nmi_map(wa, wf) + _nmi_map(wb, wf))))


# ---- fast path: (9, n) layout, one row per window pixel (column-major, as x(:) in fmi.m) ----


def _stack(x: np.ndarray) -> np.ndarray:
    """(9, n) windows of x, n = (H−2)(W−2) in row-major window order, pixels column-major."""
    h, w = x.shape
    return np.stack([x[r : h - 2 + r, c : w - 2 + c] for c in range(3) for r in range(3)]).reshape(9, -1)


def _sum9(v):
    """Σ over the 9 rows, in the order numpy sums a contiguous 9-vector (same rounding as _ent/_pdf)."""
    return ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7])) + v[8]


def _cumsum9(p, out):
    out[0] = p[0]
    for k in range(1, 9):
        np.add(out[k - 1], p[k], out=out[k])
    return out


class _Side:
    """Per-window terms of one image's windows w (9, n): PDF, entropy (bits), centred PDF and its
    sum of squares, index spread, CDF and its sum; the PDF and CDF live in padded (10, n) tables
    ([PDF; PDF_9], [0; CDF]) for the rank look-ups of ``_nmi_fast``."""

    __slots__ = ("p", "h", "t", "tt", "sd", "cum", "csum", "pad_p", "pad_c")

    def __init__(self, w: np.ndarray):
        lo, hi = w.min(axis=0), w.max(axis=0)
        rng = hi - lo
        flat = rng <= 0
        x = w - lo
        x /= np.where(flat, 1.0, rng)
        if flat.any():
            x[:, flat] = 1.0  # constant window → uniform PDF
        n = x.shape[1]
        self.pad_p = np.empty((10, n))  # [PDF; PDF_9]
        p = self.p = np.divide(x, _sum9(x), out=self.pad_p[:9])
        self.pad_p[9] = p[8]
        lp = p + 1e-300  # p ≥ 0; zero cells contribute 0·log(1e-300) = 0
        np.log(lp, out=lp)
        lp *= p
        self.h = _sum9(lp) * -_INV_LN2
        self.t = p - _sum9(p) / 9.0
        self.tt = _sum9(self.t * self.t)
        m = _MOM @ p
        self.sd = np.sqrt(np.maximum(m[1] - m[0] * m[0], 0.0))
        self.pad_c = np.empty((10, n))  # [0; CDF]
        self.pad_c[0] = 0.0
        self.cum = _cumsum9(p, self.pad_c[1:])
        self.csum = _sum9(self.cum)


def _nmi_fast(A: _Side, F: _Side) -> np.ndarray:
    """Per-window NMI of source windows A against fused windows F; same value as ``_nmi``.
    Consumes A (its tables are reversed in place where c < 0); F can be shared.

    The merged order of the breakpoints F_i (CDF of F) and Q_j (CDF of the source, reversed source
    for c < 0) follows from c_i = #{j: Q_j < F_i} and d_j = #{i: F_i ≤ Q_j} (a stable sort puts F
    first on ties): the segment ending at F_i starts at max(F_{i−1}, Q_{c_i−1}) and lies in cell
    (i, min(c_i, 8)); the one ending at Q_j starts at max(Q_{j−1}, F_{d_j−1}), cell (min(d_j, 8), j).
    """
    n = A.p.shape[1]
    num = _sum9(A.t * F.t)
    c = np.where(num == 0, 0.0, num / np.sqrt(A.tt * F.tt))
    up = c >= 0
    qpad, pq, sq = A.pad_c, A.pad_p, A.csum  # source tables, reversed in place where c < 0
    Q = qpad[1:]
    if not up.all():
        sq = sq.copy()
        low = np.flatnonzero(~up)  # W-bound = M-bound against the reversed source
        rp = A.p[::-1, low]
        rq = _cumsum9(rp, np.empty(rp.shape))
        Q[:, low], pq[:9, low], pq[9, low], sq[low] = rq, rp, rp[8], _sum9(rq)
    cf = F.cum
    L = (Q[None] < cf[:, None]).view(np.uint8)  # L[i, j] = [Q_j < F_i]
    n_lt = L.sum(axis=0, dtype=np.uint8)  # #{i: F_i > Q_j} = 9 − d_j
    cnt = L[:, 0] + L[:, 1]
    for j in range(2, 9):
        cnt += L[:, j]  # c_i
    col = np.arange(n, dtype=np.int32)  # flat indices into the (10, n) tables (int32: faster take)
    i_f = cnt.astype(np.int32)
    i_f *= n
    i_f += col  # row c_i (≤ 9)
    i_q = 9 - n_lt.astype(np.int32)
    i_q *= n
    i_q += col  # row d_j
    seg, prod = np.empty((18, n)), np.empty((18, n))
    np.maximum(F.pad_c[:9], np.take(qpad, i_f), out=seg[:9])
    np.subtract(cf, seg[:9], out=seg[:9])
    np.maximum(qpad[:9], np.take(F.pad_c, i_q), out=seg[9:])
    np.subtract(Q, seg[9:], out=seg[9:])
    np.multiply(F.p, np.take(pq, i_f), out=prod[:9])
    np.multiply(np.take(F.pad_p, i_q), pq[:9], out=prod[9:])
    sf = F.csum
    # Σ_ij min(F_i, Q_j) = Σ_i F_i (9 − c_i) + Σ_j Q_j (9 − d_j)
    smin = 9.0 * sf - _sum9(cf * cnt.astype(np.float64)) + _sum9(Q * n_lt.astype(np.float64))
    # upper: Σ min(F_i, A_j) − ΣFΣA;  lower: Σ max(F_i + A_j − 1, 0) − ΣFΣA = 10ΣF − Σ min(F_i, Ā_j) − ΣFΣA
    cov = np.where(up, smin, 10.0 * sf - smin) - sf * A.csum
    s = A.sd * F.sd
    k = np.where((s > 0) & (c != 0) & (cov != 0), c / (cov / s), 0.0)  # _mix
    q = 1.0 - k
    hs = A.h + F.h
    base = q * hs - q * np.log2(np.abs(q) + 1e-300)
    z = np.empty((36, n))  # [k·seg + q·prod; q·prod]; zero segments give equal pairs (no change)
    np.multiply(prod, q, out=z[18:])
    np.multiply(seg, k, out=z[:18])
    z[:18] += z[18:]
    lz = np.abs(z)
    lz += 1e-300
    np.log(lz, out=lz)
    lz *= z
    hj = base + (lz[18:].sum(axis=0) - lz[:18].sum(axis=0)) * _INV_LN2
    mi = hs - hj
    return np.where(mi == 0, 0.0, 2.0 * mi / hs)


def _fmi_windows(wa: np.ndarray, wb: np.ndarray, wf: np.ndarray) -> float:
    n = wf.shape[1]
    va, vb = np.ones(n), np.ones(n)
    same_a, same_b = (wa == wf).all(axis=0), (wb == wf).all(axis=0)
    diff_a, diff_b = np.flatnonzero(~same_a), np.flatnonzero(~same_b)
    if len(diff_a) + len(diff_b) > 1.8 * n:  # nearly all windows differ: share F's terms

        def job(s):
            sl = slice(s, s + _CHUNK)
            fs = _Side(wf[:, sl])
            va[sl] = _nmi_fast(_Side(wa[:, sl]), fs)
            vb[sl] = _nmi_fast(_Side(wb[:, sl]), fs)

        _run(job, range(0, n, _CHUNK))
        va[same_a] = 1.0
        vb[same_b] = 1.0
    else:

        def job(task):
            w, v, idx = task
            v[idx] = _nmi_fast(_Side(w[:, idx]), _Side(wf[:, idx]))

        _run(job, [(w, v, t[s : s + _CHUNK]) for w, t, v in ((wa, diff_a, va), (wb, diff_b, vb))
                   for s in range(0, len(t), _CHUNK)])
    return float(np.mean(0.5 * (va + vb)))


def _run(job, tasks) -> None:
    """Run job over tasks on up to _THREADS threads (numpy releases the GIL inside its loops);
    each task writes a disjoint part of the output."""
    tasks = list(tasks)

    def quiet(task):  # np.errstate is per thread
        with np.errstate(all="ignore"):
            job(task)

    if _THREADS <= 1 or len(tasks) < 2:
        for t in tasks:
            quiet(t)
        return
    with ThreadPoolExecutor(min(_THREADS, len(tasks))) as ex:
        for _ in ex.map(quiet, tasks):
            pass


def _fmi_binary(wa: np.ndarray, wb: np.ndarray, wf: np.ndarray) -> float:
    """Same as ``_fmi_windows`` for 0/1 windows: one NMI per distinct (source, F) window pair."""
    codes = [(_POW2 @ w).astype(np.int64) for w in (wa, wb, wf)]
    keys = [(cx << 9) | codes[2] for cx in codes[:2]]
    uniq = np.flatnonzero(np.bincount(np.concatenate(keys), minlength=1 << 18))
    bits = ((uniq[None, :] >> np.arange(18)[:, None]) & 1).astype(np.float64)  # rows 0–8 F, 9–17 source
    table = np.zeros(1 << 18)
    table[uniq] = _nmi_fast(_Side(bits[9:]), _Side(bits[:9]))
    table[uniq[(uniq >> 9) == (uniq & 511)]] = 1.0  # identical windows
    return float(np.mean(0.5 * (table[keys[0]] + table[keys[1]])))


def fmi(a: np.ndarray, b: np.ndarray, f: np.ndarray, feature: str = "pixel") -> float:
    """Fast-FMI with 3×3 windows for one feature ('pixel', 'dct', 'wavelet', 'edge')."""
    maps = [feature_map(x, feature) for x in (a, b, f)]
    if min(maps[2].shape) < 3:
        raise ValueError(f"FMI needs feature maps of at least 3×3 pixels, got {maps[2].shape}")
    with np.errstate(all="ignore"):
        if all(((m == 0) | (m == 1)).all() for m in maps):
            return _fmi_binary(*(_stack(m) for m in maps))
        return _fmi_windows(*(_stack(m) for m in maps))


def fmi_pixel(a, b, f) -> float:
    return fmi(a, b, f, "pixel")


def fmi_dct(a, b, f) -> float:
    return fmi(a, b, f, "dct")


def fmi_wavelet(a, b, f) -> float:
    return fmi(a, b, f, "wavelet")


def fmi_edge(a, b, f) -> float:
    return fmi(a, b, f, "edge")

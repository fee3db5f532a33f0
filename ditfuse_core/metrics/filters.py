"""MATLAB-compatible filtering helpers (filter2/conv2/imfilter/fspecial/freqspace/blkproc).

Why: the reference values come from MATLAB code, and border handling (zero 'same', 'valid',
'replicate') changes metric values at the 1e-3 level. Everything here is separable or uses
integral images, so no metric needs a per-pixel Python loop.
"""

from __future__ import annotations

import numpy as np
from scipy import fft as sfft
from scipy import ndimage

SOBEL_X = np.array([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])  # horizontal derivative
SOBEL_Y = SOBEL_X.T.copy()  # vertical derivative ([-1 -2 -1; 0 0 0; 1 2 1])


def gaussian1d(size: int, sigma: float) -> np.ndarray:
    """1-D factor of ``fspecial('gaussian', size, sigma)`` (normalised to sum 1)."""
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(x * x) / (2.0 * sigma * sigma))
    return g / g.sum()


def sep_correlate(x: np.ndarray, k1d: np.ndarray, mode: str = "valid") -> np.ndarray:
    """Correlate with the separable kernel ``outer(k1d, k1d)`` (odd length).

    mode: 'valid' (MATLAB filter2 'valid'), 'same' (zero padding, filter2 'same'),
    'replicate' (imfilter 'replicate'), 'symmetric' (imfilter 'symmetric').
    """
    n = len(k1d)
    if n % 2 != 1:
        raise ValueError("odd kernel length required")
    nd_mode = {"valid": "constant", "same": "constant", "replicate": "nearest", "symmetric": "reflect"}[mode]
    y = ndimage.correlate1d(x, k1d, axis=0, mode=nd_mode, cval=0.0)
    y = ndimage.correlate1d(y, k1d, axis=1, mode=nd_mode, cval=0.0)
    if mode == "valid":
        h = n // 2
        y = y[h : x.shape[0] - h, h : x.shape[1] - h]
    return y


def correlate_same(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    """MATLAB ``filter2(k, x, 'same')`` for an odd-sized kernel (zero padding)."""
    return ndimage.correlate(x, k, mode="constant", cval=0.0)


def convolve_same(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    """MATLAB ``conv2(x, k, 'same')`` for an odd-sized kernel (zero padding)."""
    return ndimage.correlate(x, k[::-1, ::-1], mode="constant", cval=0.0)


def box_sum_valid(x: np.ndarray, n: int) -> np.ndarray:
    """Sum over every n×n window fully inside x (any n), via an integral image."""
    c = np.zeros((x.shape[0] + 1, x.shape[1] + 1), dtype=np.float64)
    np.cumsum(np.cumsum(x, axis=0), axis=1, out=c[1:, 1:])
    return c[n:, n:] - c[:-n, n:] - c[n:, :-n] + c[:-n, :-n]


def block_reduce_sum(x: np.ndarray, n: int) -> np.ndarray:
    """``blkproc(x, [n n], @(b) sum(b(:)))``: non-overlapping blocks, partial blocks zero-padded."""
    h, w = x.shape
    hp, wp = -(-h // n) * n, -(-w // n) * n
    pad = np.zeros((hp, wp), dtype=np.float64)
    pad[:h, :w] = x
    return pad.reshape(hp // n, n, wp // n, n).sum(axis=(1, 3))


def freqspace(n: int) -> np.ndarray:
    """MATLAB ``freqspace(n)``: normalised frequencies with 0 at index floor(n/2)."""
    return (np.arange(n) - n // 2) * (2.0 / n)


def freq_radius(shape, scale_rows: float, scale_cols: float) -> np.ndarray:
    """r = sqrt(u²+v²) on the ``freqspace([h,w],'meshgrid')`` grid with u·scale_cols, v·scale_rows."""
    v = freqspace(shape[0])[:, None] * scale_rows
    u = freqspace(shape[1])[None, :] * scale_cols
    return np.sqrt(u * u + v * v)


def apply_centered_filter(x: np.ndarray, h_centered: np.ndarray) -> np.ndarray:
    """``real(ifft2(ifftshift(fftshift(fft2(x)) .* H)))`` for a centred, point-symmetric real
    frequency response H (then the full inverse is real and a real FFT gives the same result)."""
    h = np.fft.ifftshift(h_centered)[:, : x.shape[1] // 2 + 1]
    return sfft.irfft2(sfft.rfft2(x, workers=2) * h, s=x.shape, workers=2)

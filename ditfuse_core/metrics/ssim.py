"""SSIM of F against each source (Wang et al. 2004), reported as mean ("SSIM") and sum ("SSIM_sum").

Why: IVIF papers report either SSIM(A,F)+SSIM(B,F) (VIFB, range up to 2) or their mean (range up
to 1) under the same name. Here "SSIM" is the **mean** ½[SSIM(A,F)+SSIM(B,F)] and "SSIM_sum" is
the **sum** (= VIFB ``Ssim``). Definition: 11×11 Gaussian window σ=1.5 (normalised), K1=0.01,
K2=0.03, L=255, SSIM map on the 'valid' region (no padding), averaged. This equals skimage's
``structural_similarity(x, f, data_range=255, gaussian_weights=True, sigma=1.5,
use_sample_covariance=False)``; skimage's defaults (7×7 box, sample covariance) do not.
Higher is better; SSIM(A,A) = 1.
"""

from __future__ import annotations

import numpy as np

from .cache import cached
from .filters import gaussian1d, sep_correlate

_WIN = gaussian1d(11, 1.5)


def _local_stats(x: np.ndarray):
    """(local mean, local variance) of one image with the SSIM window, valid region."""
    mx = sep_correlate(x, _WIN)
    return mx, sep_correlate(x * x, _WIN) - mx * mx


def ssim_components(x: np.ndarray, y: np.ndarray, k1: float = 0.01, k2: float = 0.03, L: float = 255.0,
                    y_stats=None):
    """(luminance map, contrast-structure map) on the valid region. ``y_stats`` = ``_local_stats(y)``
    when already computed."""
    c1, c2 = (k1 * L) ** 2, (k2 * L) ** 2
    mx, sxx = _local_stats(x)
    my, syy = y_stats if y_stats is not None else _local_stats(y)
    sxy = sep_correlate(x * y, _WIN) - mx * my
    lum = (2 * mx * my + c1) / (mx * mx + my * my + c1)
    cs = (2 * sxy + c2) / (sxx + syy + c2)
    return lum, cs


def ssim_components_cached(x: np.ndarray, y: np.ndarray):
    """``ssim_components`` memoised inside ``cache.shared_cache()`` (inputs must outlive the cache);
    y's local statistics (y = F, shared by both sources) are memoised too."""
    return cached(("ssim", id(x), id(y)),
                  lambda: ssim_components(x, y, y_stats=cached(("ssim_stats", id(y)), lambda: _local_stats(y))))


def ssim(x: np.ndarray, y: np.ndarray) -> float:
    """Wang SSIM of two gray images on 0–255."""
    lum, cs = ssim_components_cached(x, y)
    return float(np.mean(lum * cs))


def ssim_sum(a, b, f) -> float:
    return ssim(a, f) + ssim(b, f)


def ssim_mean(a, b, f) -> float:
    return 0.5 * ssim_sum(a, b, f)

"""VIF: Sheikh & Bovik's pixel-domain visual information fidelity (VIFp), summed over the sources.

Why: the standard information-fidelity score in IVIF papers, which report VIF(A,F) + VIF(B,F).
Definition (Sheikh's ``vifvec``/pixel version, identical to ``sewar.full_ref.vifp`` on 0–255
data): 4 scales; at scale s a Gaussian window of N = 2^(5−s)+1 taps, σ = N/5; from scale 2 on
the images are filtered ('valid') and decimated by 2; local variances/covariance on the 'valid'
region; σn² = 2; VIF = Σ log10(1 + g²σ_X²/(σ_v²+σn²)) / Σ log10(1 + σ_X²/σn²) with the usual
guards (eps 1e-10). Reported: VIF(A,F) + VIF(B,F) (reference = source, distorted = F), so
VIF(A,A,A) = 2. Higher is better.
"""

from __future__ import annotations

import numpy as np

from .filters import sep_correlate

EPS = 1e-10


def _win1d(n: int) -> np.ndarray:
    sigma = n / 5.0
    x = np.arange(n, dtype=np.float64) - (n - 1) / 2.0
    g2 = np.exp(-(x[:, None] ** 2 + x[None, :] ** 2) / (2 * sigma * sigma))
    g2[g2 < np.finfo(np.float64).eps * g2.max()] = 0  # sewar/MATLAB fspecial truncation
    g = np.sqrt(np.diag(g2))  # separable factor (the truncation never bites at these sizes)
    return g / g.sum()


def _pyramid(x: np.ndarray):
    """Per scale: (image, window, local mean, local variance) — the terms that depend on one image."""
    out = []
    for scale in range(1, 5):
        n = 2 ** (4 - scale + 1) + 1
        w = _win1d(n)
        if scale > 1:
            x = sep_correlate(x, w)[::2, ::2]
        mx = sep_correlate(x, w)
        out.append((x, w, mx, np.maximum(sep_correlate(x * x, w) - mx * mx, 0)))
    return out


def vifp(ref: np.ndarray, dist: np.ndarray, sigma_nsq: float = 2.0, dist_pyramid=None) -> float:
    """Pixel VIF of ``dist`` against ``ref`` (both 2-D, 0–255). ``dist_pyramid`` = ``_pyramid(dist)``
    when already computed (``vif`` shares F's between the two sources; it is not modified)."""
    num = den = 0.0
    for (x, w, mx, sxx), (y, _, my, syy) in zip(_pyramid(ref), dist_pyramid or _pyramid(dist)):
        sxy = sep_correlate(x * y, w) - mx * my
        g = sxy / (sxx + EPS)
        sv = syy - g * sxy
        i = sxx < EPS
        g[i] = 0
        sv[i] = syy[i]
        sxx[i] = 0
        i = syy < EPS
        g[i] = 0
        sv[i] = 0
        i = g < 0
        sv[i] = syy[i]
        g[i] = 0
        sv[sv <= EPS] = EPS
        num += np.sum(np.log10(1.0 + g * g * sxx / (sv + sigma_nsq)))
        den += np.sum(np.log10(1.0 + sxx / sigma_nsq))
    return float(num / den) if den > 0 else float("nan")  # flat reference: undefined


def vif(a, b, f) -> float:
    pf = _pyramid(f)
    return vifp(a, f, dist_pyramid=pf) + vifp(b, f, dist_pyramid=pf)

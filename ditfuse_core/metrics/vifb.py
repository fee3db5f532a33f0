"""VIFB's colour and argument conventions, to reproduce its published per-image values.

Why: VIFB (Zhang et al. 2020) evaluates RGB results without gray conversion, and its numbers
are only comparable under the same rules. ``vifb_metric(name, vi, ir, fused)``:
* argument order is VIFB's: **visible first**, infrared second, fused third;
* for an RGB fused image each metric is computed per channel k (visible channel k, infrared
  channel k or its only channel) and the three values are averaged — except
  ``Spatial_frequency``, which sees the channels laid side by side as one M×3W image, and
  ``Edge_intensity``, which averages the gradient magnitude over all pixels and channels (the same
  as the per-channel mean);
* values are on 0–255 (uint8 files read as they are).
Names are VIFB's: Avg_gradient, Cross_entropy, Edge_intensity, Entropy, Mutinf, Psnr, Qabf, Qcb,
Qcv, Rmse, Spatial_frequency, Ssim, Variance.
"""

from __future__ import annotations

import numpy as np

from .convert import as_float255
from .entropy import cross_entropy, entropy
from .gradient import average_gradient, edge_intensity
from .mutual_information import mutual_information
from .psnr import psnr_vifb, rmse_vifb
from .qabf import qabf
from .qcb import qcb
from .qcv import qcv
from .spatial_frequency import spatial_frequency
from .ssim import ssim_sum
from .std import standard_deviation

_PER_CHANNEL = {
    "Avg_gradient": lambda a, b, f: average_gradient(f),
    "Cross_entropy": cross_entropy,
    "Edge_intensity": lambda a, b, f: edge_intensity(f),
    "Entropy": lambda a, b, f: entropy(f),
    "Mutinf": mutual_information,
    "Psnr": psnr_vifb,
    "Qabf": qabf,
    "Qcb": qcb,
    "Qcv": qcv,
    "Rmse": rmse_vifb,
    "Ssim": ssim_sum,
    "Variance": lambda a, b, f: standard_deviation(f),
}
VIFB_METRICS = sorted(list(_PER_CHANNEL) + ["Spatial_frequency"])
LOWER_IS_BETTER = {"Cross_entropy", "Qcv", "Rmse"}


def vifb_metric(name: str, vi, ir, fused) -> float:
    """One VIFB metric with VIFB's conventions (see module docstring)."""
    vi, ir, f = as_float255(vi), as_float255(ir), as_float255(fused)
    if name == "Spatial_frequency":
        side = np.concatenate([f[..., k] for k in range(f.shape[2])], axis=1) if f.ndim == 3 else f
        return spatial_frequency(side)
    fn = _PER_CHANNEL[name]
    if f.ndim == 2:
        g = lambda x: x if x.ndim == 2 else x[..., 0]  # noqa: E731  (gray fused: first plane)
        return float(fn(g(vi), g(ir), f))
    vals = []
    for k in range(f.shape[2]):
        a = vi[..., k] if vi.ndim == 3 else vi
        b = ir[..., k] if ir.ndim == 3 else ir
        vals.append(fn(a, b, f[..., k]))
    return float(np.mean(vals))

"""Image-fusion metrics with stated conventions, validated against the VIFB and MFIF MATLAB toolkits.

Conventions common to all metrics (details in each module's docstring and docs/notes/metrics.md):
inputs are 2-D float64 gray images on 0–255 (``convert.to_gray``: MATLAB rgb2gray, uint8 rounded);
arguments are (image 1, image 2, fused) in DiTFuse's order (visible / far-focus / over-exposed
first); every metric declares whether higher or lower is better (``METRICS[name].higher_is_better``).
``vifb.vifb_metric`` reproduces VIFB's own colour handling and names.
"""

from .convert import to_gray
from .registry import DEFAULT, FMI_ALL, METRICS, Metric, resolve
from .report import compute_metrics, metrics_report

__all__ = ["DEFAULT", "FMI_ALL", "METRICS", "Metric", "compute_metrics", "metrics_report", "resolve", "to_gray"]

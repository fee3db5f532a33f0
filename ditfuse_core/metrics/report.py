"""Compute a metric set for one (image 1, image 2, fused) triple and format it as a Markdown table.

Why: the ComfyUI "DiTFuse Metrics" node and the evaluation CLI need one call that accepts whatever
images they hold (HxW or HxWx3, uint8 or float 0–1 / 0–255, PIL or numpy) and applies the stated
conventions: gray conversion by ``convert.to_gray`` (MATLAB rgb2gray), 0–255 range, DiTFuse's
argument order (image 1, image 2, fused). Sources of a different size are resized (bicubic) to the
fused image's size.
"""

from __future__ import annotations

import math

import numpy as np

from .cache import shared_cache
from .convert import to_gray
from .registry import METRICS, resolve


def _fit(x: np.ndarray, shape) -> np.ndarray:
    if x.shape == shape:
        return x
    from PIL import Image

    im = Image.fromarray(x.astype(np.float32), mode="F").resize((shape[1], shape[0]), Image.BICUBIC)
    return np.clip(np.asarray(im, dtype=np.float64), 0, 255)


def compute_metrics(image1, image2, fused, names=None, task: str | None = None) -> dict[str, float]:
    """{metric name: value} for the requested metrics (default set if ``names`` is None)."""
    f = to_gray(fused)
    a, b = _fit(to_gray(image1), f.shape), _fit(to_gray(image2), f.shape)
    with shared_cache():
        return {n: float(METRICS[n].fn(a, b, f)) for n in resolve(names, task)}


def format_value(v: float) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "nan"
    if math.isinf(v):
        return "inf"
    return f"{v:.4f}" if abs(v) < 1000 else f"{v:.1f}"


def metrics_report(image1, image2, fused, names=None, task: str | None = None):
    """(Markdown table, {name: value}) for one fused result. See module docstring for conventions."""
    values = compute_metrics(image1, image2, fused, names, task)
    lines = ["| metric | value | better | definition |", "| --- | ---: | :---: | --- |"]
    for n, v in values.items():
        m = METRICS[n]
        lines.append(f"| {n} | {format_value(v)} | {m.arrow} | {m.summary} |")
    return "\n".join(lines), values

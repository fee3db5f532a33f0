"""The loss curve of a training run as a PNG (no plotting library needed)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def plot_loss(log_path: str | Path, png: str | Path, w: int = 640, h: int = 360) -> Path | None:
    from PIL import Image, ImageDraw

    recs = [json.loads(line) for line in Path(log_path).read_text().splitlines() if line.strip()]
    if len(recs) < 2:
        return None
    xs = np.array([r["step"] for r in recs], float)
    ys = np.log10(np.maximum([r["loss"] for r in recs], 1e-8))
    im = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(im)
    m = 50
    x0, x1, y0, y1 = xs.min(), xs.max(), ys.min(), ys.max()
    y1 = y1 if y1 > y0 else y0 + 1e-3
    px = m + (xs - x0) / max(x1 - x0, 1) * (w - 2 * m)
    py = h - m - (ys - y0) / (y1 - y0) * (h - 2 * m)
    d.rectangle([m, m, w - m, h - m], outline="gray")
    d.line(list(zip(px.tolist(), py.tolist())), fill="blue", width=2)
    d.text((m, 10), f"flow-matching loss (log10), steps {int(x0)}..{int(x1)}", fill="black")
    d.text((5, m - 5), f"{10 ** y1:.3g}", fill="black")
    d.text((5, h - m - 5), f"{10 ** y0:.3g}", fill="black")
    im.save(png)
    return Path(png)


# ----------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------

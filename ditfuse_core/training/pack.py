"""A compact, self-contained training pack from shared/data/train, for machines that cannot read it and as
the bundled model's fixed training data.

The pack is a folder: images/*.jpg (RGB, longest side <= max_side), labels/*.png (MSRC class maps,
nearest-neighbour resized), ir/*.jpg (RoadScene infrared, gray) and index.json, which
``ditfuse_core.m3.scan_sources(pack)`` reads. It holds third-party images: keep it out of git
(.devdata/ is ignored) and do not redistribute it.
"""
from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from ..m3 import scan_sources


def _fit(im: Image.Image, max_side: int, resample) -> Image.Image:
    w, h = im.size
    s = max_side / max(w, h)
    if s >= 1:
        return im
    return im.resize((max(1, round(w * s)), max(1, round(h * s))), resample)


def build_pack(data, out, max_side: int = 384, quality: int = 87) -> tuple[int, int]:
    """Write the pack of ``data`` (shared/data) to ``out``; returns (images, bytes). Raises FileNotFoundError
    when ``data`` holds no training images."""
    srcs = scan_sources(data)
    if not srcs:
        raise FileNotFoundError(f"no training images under {data}")
    out = Path(out)
    for d in ("images", "labels", "ir"):
        (out / d).mkdir(parents=True, exist_ok=True)
    items = []
    for i, s in enumerate(srcs):
        name = f"{s.kind}_{i:05d}"
        with Image.open(s.image) as im:
            im = im.convert("RGB")
            size0 = im.size
            im = _fit(im, max_side, Image.BICUBIC)
            im.save(out / "images" / f"{name}.jpg", quality=quality)
            size = im.size
        it = {"image": f"images/{name}.jpg", "kind": s.kind, "origin": Path(s.image).name}
        if s.labels:
            with Image.open(s.labels) as lab:
                lab = lab.convert("L")
                if lab.size == size0:
                    lab.resize(size, Image.NEAREST).save(out / "labels" / f"{name}.png", optimize=True)
                    it["labels"] = f"labels/{name}.png"
        if s.ir:
            with Image.open(s.ir) as ir:
                ir = ir.convert("L")
                if ir.size == size0:
                    ir.resize(size, Image.BICUBIC).save(out / "ir" / f"{name}.jpg", quality=quality)
                    it["ir"] = f"ir/{name}.jpg"
        items.append(it)
    (out / "index.json").write_text(json.dumps({"sources": items, "max_side": max_side}, indent=0))
    return len(items), sum(p.stat().st_size for p in out.rglob("*") if p.is_file())

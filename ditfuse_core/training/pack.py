"""A compact, self-contained training pack from shared/data/train, for machines that cannot read it and as
the bundled model's fixed training data.

The pack is a folder: images/*.jpg (RGB, longest side <= max_side), labels/*.png (MSRC class maps,
nearest-neighbour resized), ir/*.jpg (RoadScene infrared, gray) and index.json, which
``ditfuse_core.training.m3.scan_sources(pack)`` reads. It holds third-party images: keep it out of git
(.devdata/ is ignored) and do not redistribute it.
"""
from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from .m3 import scan_sources


def _fit(im: Image.Image, max_side: int, resample) -> Image.Image:
    w, h = im.size
    s = max_side / max(w, h)
    if s >= 1:
        return im
    return im.resize((max(1, round(w * s)), max(1, round(h * s))), resample)


def _companion(path, size0, size, dest: Path, resample, save: dict) -> bool:
    """A gray map registered with its image (MSRC labels, RoadScene infrared), resized as the image was;
    skipped (False) when it does not match the image's original size."""
    with Image.open(path) as im:
        im = im.convert("L")
        if im.size != size0:
            return False
        im.resize(size, resample).save(dest, **save)
    return True


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
        for key, rel, resample, save in (("labels", f"labels/{name}.png", Image.NEAREST, {"optimize": True}),
                                         ("ir", f"ir/{name}.jpg", Image.BICUBIC, {"quality": quality})):
            if getattr(s, key) and _companion(getattr(s, key), size0, size, out / rel, resample, save):
                it[key] = rel
        items.append(it)
    (out / "index.json").write_text(json.dumps({"sources": items, "max_side": max_side}, indent=0))
    return len(items), sum(p.stat().st_size for p in out.rglob("*") if p.is_file())

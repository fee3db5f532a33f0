#!/usr/bin/env python
"""Build a compact, self-contained training pack from shared/data/train (for machines that cannot read it).

    python scripts/make_train_pack.py                       # -> .devdata/pack  (~35 MB)
    python scripts/make_train_pack.py --out DIR --max-side 384 --quality 90

The pack is a folder: images/*.jpg (RGB, longest side <= --max-side), labels/*.png (MSRC class maps,
nearest-neighbour resized), ir/*.jpg (RoadScene infrared, gray) and index.json, which
``ditfuse_core.m3.scan_sources(pack)`` reads. It holds third-party images: keep it out of git
(.devdata/ is ignored) and do not redistribute it.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ditfuse_core.m3 import default_data_root, scan_sources  # noqa: E402


def _fit(im: Image.Image, max_side: int, resample) -> Image.Image:
    w, h = im.size
    s = max_side / max(w, h)
    if s >= 1:
        return im
    return im.resize((max(1, round(w * s)), max(1, round(h * s))), resample)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(default_data_root()), help="shared/data folder")
    ap.add_argument("--out", default=str(ROOT / ".devdata" / "pack"))
    ap.add_argument("--max-side", type=int, default=384)
    ap.add_argument("--quality", type=int, default=87)
    a = ap.parse_args(argv)
    srcs = scan_sources(a.data)
    if not srcs:
        sys.exit(f"no training images under {a.data}")
    out = Path(a.out)
    for d in ("images", "labels", "ir"):
        (out / d).mkdir(parents=True, exist_ok=True)
    items = []
    for i, s in enumerate(srcs):
        name = f"{s.kind}_{i:05d}"
        with Image.open(s.image) as im:
            im = im.convert("RGB")
            size0 = im.size
            im = _fit(im, a.max_side, Image.BICUBIC)
            im.save(out / "images" / f"{name}.jpg", quality=a.quality)
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
                    ir.resize(size, Image.BICUBIC).save(out / "ir" / f"{name}.jpg", quality=a.quality)
                    it["ir"] = f"ir/{name}.jpg"
        items.append(it)
    (out / "index.json").write_text(json.dumps({"sources": items, "max_side": a.max_side}, indent=0))
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"{len(items)} images -> {out} ({total / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()

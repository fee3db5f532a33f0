"""M3 sources: clean images (MSRC with class maps, BSDS500, RoadScene visible + IR) from shared/data/train or a
training pack, and where to find them."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np


def load_rgb(path: str | os.PathLike) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def load_gray(path: str | os.PathLike) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("L"))


@dataclass
class Source:
    """One clean image; ``labels`` (uint8 MSRC class map) if it has named classes; ``ir`` path for a
    registered real infrared image."""
    image: str
    labels: str | None = None
    ir: str | None = None
    kind: str = "natural"


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The data folder: `root`, else $DITFUSE_DATA, else ``shared/data`` in or beside the working directory
    (where the repository's tests and tools run: a checkout with ``../shared/data`` next to it)."""
    if root:
        return Path(root)
    if os.environ.get("DITFUSE_DATA"):
        return Path(os.environ["DITFUSE_DATA"])
    here = Path.cwd() / "shared" / "data"
    return here if here.is_dir() else Path.cwd().parent / "shared" / "data"


def scan_sources(root: str | os.PathLike | None = None) -> list[Source]:
    """Sources from ``shared/data/train`` (MSRC with labels, BSDS500, RoadScene visible + IR) or from a
    pack made by ``training.pack.build_pack`` (``index.json`` at ``root``)."""
    root = data_root(root)
    idx = root / "index.json"
    if idx.exists():
        items = json.loads(idx.read_text())["sources"]
        out = []
        for it in items:
            out.append(Source(str(root / it["image"]), str(root / it["labels"]) if it.get("labels") else None,
                              str(root / it["ir"]) if it.get("ir") else None, it.get("kind", "natural")))
        return out
    train = root / "train" if (root / "train").is_dir() else root
    out = []
    msrc = train / "natural" / "msrc_v2"
    for p in sorted((msrc / "images").glob("*.jpg")):
        lab = msrc / "labels" / f"{p.stem}_sem.png"
        out.append(Source(str(p), str(lab) if lab.exists() else None, None, "msrc"))
    for p in sorted((train / "natural" / "bsds500" / "images").glob("*/*.jpg")):
        out.append(Source(str(p), None, None, "bsds"))
    for p in sorted((train / "roadscene" / "vi").glob("*.jpg")):
        ir = train / "roadscene" / "ir" / p.name
        out.append(Source(str(p), None, str(ir) if ir.exists() else None, "roadscene"))
    return out

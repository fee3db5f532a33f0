#!/usr/bin/env python
"""Build a compact, self-contained training pack from shared/data/train (``ditfuse_core.training.pack``).

    python scripts/make_train_pack.py                       # -> .devdata/pack  (~37 MB)
    python scripts/make_train_pack.py --out DIR --max-side 384 --quality 90

`python -m tools.build_default_model` builds the default pack itself when it is missing.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

from ditfuse_core.training.m3 import data_root
from ditfuse_core.training.pack import build_pack


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=str(data_root()), help="shared/data folder")
    ap.add_argument("--out", default=str(ROOT / ".devdata" / "pack"))
    ap.add_argument("--max-side", type=int, default=384)
    ap.add_argument("--quality", type=int, default=87)
    a = ap.parse_args(argv)
    try:
        n, size = build_pack(a.data, a.out, a.max_side, a.quality)
    except FileNotFoundError as e:
        sys.exit(str(e))
    print(f"{n} images -> {a.out} ({size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()

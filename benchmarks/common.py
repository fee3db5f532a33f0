"""Set-up the benchmarks share: paths and data, device arguments, synchronised timing, the example input
pair, a pipeline around random weights, and Markdown tables."""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Callable, Sequence

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def data_dir(*parts: str) -> Path | None:
    """``$DITFUSE_DATA`` (else ``shared/data`` beside the checkout) joined with `parts`; None when absent."""
    path = Path(os.environ.get("DITFUSE_DATA") or ROOT.parent / "shared" / "data").joinpath(*parts)
    return path if path.exists() else None


def add_device_args(ap: argparse.ArgumentParser, device: str = "cpu", dtype: str = "fp32",
                    choices: Sequence[str] | None = ("fp32", "bf16")) -> None:
    """--device and --dtype."""
    ap.add_argument("--device", default=device)
    ap.add_argument("--dtype", default=dtype, choices=choices)


def sync(device) -> None:
    """Wait for the work queued on a CUDA device (a str or torch.device); nothing on the CPU."""
    if str(device).startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def timed(fn: Callable, device="cpu"):
    """(fn(), seconds it took), the device synchronised before and after."""
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - t0


def example_pair(side: int) -> tuple[list[Image.Image], str]:
    """The example IVIF pair resized to side × side (bicubic), else a synthetic pair; and which it is."""
    ex = ROOT / "example_images"
    pics = [ex / "ivif_1_visible.png", ex / "ivif_2_infrared.png"]
    if all(p.is_file() for p in pics):
        return [Image.open(p).convert("RGB").resize((side, side), Image.BICUBIC) for p in pics], "example IVIF pair"
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:side, 0:side] / side
    out = []
    for k in range(2):
        base = 127 + 100 * np.sin(6.28 * (xx * (k + 1) + yy))[..., None] * np.array([1.0, 0.8, 0.6])
        out.append(Image.fromarray(np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)))
    return out, "synthetic pair"


def random_pipeline(transformer, vae=None):
    """A DiTFusePipeline around a (random) transformer, with the bundled tokenizer, no defaults and, unless
    given, ditfuse_core.tiny's VAE."""
    from ditfuse_core.pipeline import DiTFusePipeline
    from ditfuse_core.tiny import tiny_vae
    from ditfuse_core.tokenizer import load_tokenizer

    return DiTFusePipeline(transformer, tiny_vae() if vae is None else vae, load_tokenizer(), {})


def markdown_table(header: Sequence[str], rows: Sequence[Sequence], align: str | None = None) -> str:
    """A Markdown table; align has one of l, r, c per column (default: the first left, the others right)."""
    align = align or "l" + "r" * (len(header) - 1)
    rule = {"l": "---", "r": "---:", "c": ":---:"}
    lines = ["| " + " | ".join(map(str, header)) + " |", "| " + " | ".join(rule[a] for a in align) + " |"]
    lines += ["| " + " | ".join(map(str, r)) + " |" for r in rows]
    return "\n".join(lines)

"""The checks every entry point (CLI, library, nodes) runs before any model is loaded or any work is done.

Why one place: a bad value found after a minute of sampling, or turned into a black image, costs the user more
than a one-line message up front; and the CLI, the library and the nodes must agree on what is bad.
A `UserError` is a problem with what was asked (the CLI prints it in one line and exits 2; a node's
`validate_inputs` returns its text); anything else that escapes is a bug.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

MAX_STEPS = 1000
MIN_SIDE = 16  # one OmniGen token (8× VAE, patch 2); the bundled model's token is smaller
OUTPUT_EXTS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class UserError(ValueError):
    """A value, file or path the user gave that cannot be used; the message says which and why."""


def finite(name: str, value) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise UserError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(v):
        raise UserError(f"{name} must be a finite number, got {value}")
    return v


def check_sampling(steps=None, cfg=None, img_cfg=None, max_side=None, min_scale=None, lora_strength=None,
                   seed=None) -> None:
    """Sampling values as every entry point takes them: None / 0 steps and None / negative cfg, img_cfg and
    max_side 0 mean "the model's default" (`DiTFusePipeline.sampling`)."""
    if steps is not None:
        if isinstance(steps, float) and not steps.is_integer() or isinstance(steps, bool):
            raise UserError(f"steps must be a whole number, got {steps!r}")
        if not 0 <= int(steps) <= MAX_STEPS:
            raise UserError(f"steps must be 1 … {MAX_STEPS} (0: the model's default), got {steps}")
    for name, v in (("cfg", cfg), ("img_cfg", img_cfg)):
        if v is not None:
            v = finite(name, v)
            if v > 100:
                raise UserError(f"{name} must be at most 100 (negative: the model's default), got {v:g}")
    if max_side is not None and int(max_side) != 0 and not MIN_SIDE <= int(max_side) <= 16384:
        raise UserError(f"max_side must be 0 (the model's working size) or {MIN_SIDE} … 16384 px, got {max_side}")
    if min_scale is not None and not 0 <= finite("min_scale", min_scale) <= 16:
        raise UserError(f"min_scale must be 0 (off) … 16, got {min_scale}")
    if lora_strength is not None and abs(finite("lora_strength", lora_strength)) > 100:
        raise UserError(f"lora_strength must be within ±100, got {lora_strength}")
    if seed is not None and not 0 <= int(seed) < 2**64:
        raise UserError(f"seed must be 0 … 2^64−1, got {seed}")


def check_choice(name: str, value, options) -> str:
    if value not in options:
        raise UserError(f"{name} must be one of {', '.join(map(str, options))}; got {value!r}")
    return value


def read_images(paths: dict[str, str | os.PathLike]) -> dict:
    """{label: path} → {label: RGB PIL image}, every file fully decoded (a message naming the file otherwise)."""
    from .image_input import open_image

    out = {}
    for label, p in paths.items():
        try:
            out[label] = open_image(p)
        except (OSError, ValueError) as e:
            raise UserError(str(e)) from None
    return out


def _same(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_outputs(outputs: dict[str, str | os.PathLike], inputs=(), overwrite: bool = False) -> dict[str, Path]:
    """{label: path} of files about to be written: a known image extension, not a folder, a writable place, never
    one of the inputs or each other, and not already there unless `overwrite`."""
    out = {}
    for label, p in outputs.items():
        path = Path(p)
        if path.is_dir():
            raise UserError(f"{label} {str(p)!r} is a folder; give a file name such as {path / 'fused.png'}")
        if path.suffix.lower() not in OUTPUT_EXTS:
            raise UserError(f"{label} {str(p)!r}: unknown image extension {path.suffix!r} "
                            f"(use one of {' '.join(OUTPUT_EXTS)})")
        for i in inputs:
            if Path(i).resolve() == path.resolve() or _same(Path(i), path):
                raise UserError(f"{label} {str(p)!r} is one of the input images; choose another file name")
        for other, q in out.items():
            if q.resolve() == path.resolve():
                raise UserError(f"{label} and {other} are the same file {str(p)!r}")
        if path.exists() and not overwrite:
            raise UserError(f"{label} {str(p)!r} already exists (--overwrite replaces it)")
        check_writable_folder(path.parent, label)
        out[label] = path
    return out


def check_writable_folder(folder: Path, label: str = "output") -> None:
    """The folder, or the nearest existing folder above it (where it would be created), must be writable."""
    f = Path(folder).absolute()
    while not f.exists():
        f = f.parent
    if not f.is_dir():
        raise UserError(f"{label}: {str(f)!r} is a file, not a folder")
    if not os.access(f, os.W_OK | os.X_OK):
        raise UserError(f"{label}: cannot write in {str(f)!r} (permission denied)")

"""The authors' preprocessing and our size restoration (reading inputs: image_input.py).

Preprocessing follows DiTFuse's test.py: RGB (gray → 3 channels), LANCZOS resize so the longest side is
`max_side`, each side floored to a multiple of 16 (one token per 16×16 pixels). The output is generated at
prepared image 1's size and then (our addition) brought back to image 1's original size: by the
least-squares inverse of that resize where it enlarged, so a fusion keeps what the enlargement kept.
"""
from __future__ import annotations

import functools

import numpy as np
import torch
from PIL import Image

from .image_input import to_pil_list


def prepared_size(size: tuple[int, int], max_side: int, multiple: int = 16) -> tuple[int, int]:
    """(W, H) after scaling the longest side to max_side and flooring each side to `multiple`."""
    w, h = size
    scale = max_side / max(w, h)
    return (max(multiple, int(w * scale) // multiple * multiple), max(multiple, int(h * scale) // multiple * multiple))


def prepare(image: Image.Image, max_side: int, multiple: int = 16, size: tuple[int, int] | None = None) -> torch.Tensor:
    """PIL → [1,3,h,w] float, [-1,1] up to LANCZOS's overshoot, at the prepared size (or at `size` (W, H): the
    second image of a pair goes straight to the first one's, one resampling).

    The authors' LANCZOS, on float planes: resizing the 8-bit image would round and clip at the working size,
    which `restore`'s inverse cannot undo (a round trip alone then lost 0.0004 SSIM, 0.002 VIF on 5 TNO pairs;
    in float 0.0003 / 0.0009, docs/notes/findings.md)."""
    image = image.convert("RGB")
    size = tuple(size) if size else prepared_size(image.size, max_side, multiple)
    if size == image.size:
        arr = np.asarray(image, dtype=np.float32).transpose(2, 0, 1)
    else:
        arr = np.stack([np.asarray(c.convert("F").resize(size, Image.LANCZOS), np.float32) for c in image.split()])
    return (torch.from_numpy(arr.copy()) / 127.5 - 1.0)[None]


@functools.lru_cache(maxsize=64)
def lanczos_matrix(n: int, m: int) -> np.ndarray:
    """[m, n]: what PIL's LANCZOS resize does to one axis of length n resized to m (borders included)."""
    eye = Image.fromarray(np.eye(n, dtype=np.float32), mode="F")
    return np.asarray(eye.resize((n, m), Image.LANCZOS), np.float64)


@functools.lru_cache(maxsize=64)
def back_matrix(m: int, n: int) -> torch.Tensor:
    """[n, m] float32: one axis from the working length m back to the input's length n. Where `prepare`
    enlarged the axis (m ≥ n), the least-squares inverse of its LANCZOS resampling, so restore(prepare(x))
    gives x back; where it shrank the axis, LANCZOS."""
    mat = np.linalg.pinv(lanczos_matrix(n, m)) if m >= n else lanczos_matrix(m, n)
    return torch.from_numpy(mat).float()


def restore(pixels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[B,3,h,w] in [-1,1] → [B,H,W,3] float in 0..1 at (W,H) `size`.

    Enlarged axes go back through the inverse of prepare's resampling: LANCZOS down would low-pass what
    the enlargement kept (averaging through the round trip to 1024 px lost up to 0.003 SSIM and 0.044 VIF
    against averaging in pixels, with the inverse up to 0.0006 / 0.0035; the bundled model's output gained
    SSIM +0.0004…+0.0016 and VIF up to +0.015 on 5 pairs per eval set, Qabf −0.002…−0.007 on IVIF/MFF;
    docs/notes/findings.md). Axes prepare shrank go back with LANCZOS."""
    x = (pixels.float().cpu() + 1.0) / 2.0
    w, h = size
    if x.shape[-2:] != (h, w):
        x = back_matrix(x.shape[-2], h) @ x @ back_matrix(x.shape[-1], w).T
    return x.clamp(0, 1).permute(0, 2, 3, 1).contiguous()


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    """[B,H,W,3] float 0..1 → PIL list."""
    return to_pil_list(images)


def to_tensor(image: Image.Image) -> torch.Tensor:
    """PIL → [H,W,3] float in 0..1."""
    return torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0)

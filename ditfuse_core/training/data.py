"""Streaming datasets for training (torch ``IterableDataset``s over deterministic generators)."""
from __future__ import annotations

import math
import os

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from . import m3


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """uint8 [H, W, 3] -> float [3, H, W] in [-1, 1]."""
    return torch.from_numpy(np.array(img, copy=True)).permute(2, 0, 1).float().div(127.5).sub(1.0)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """float [3, H, W] in [-1, 1] -> uint8 [H, W, 3]."""
    return x.detach().float().clamp(-1, 1).add(1).mul(127.5).round().byte().permute(1, 2, 0).cpu().numpy()


def _worker_split():
    wi = get_worker_info()
    rank = int(os.environ.get("RANK", 0))
    world = int(os.environ.get("WORLD_SIZE", 1))
    if wi is None:
        return rank, world
    return rank * wi.num_workers + wi.id, world * wi.num_workers


class ImageCrops(IterableDataset):
    """Random crops (``size`` px, flips) of the source images for VAE training; a fraction ``p_degraded``
    is replaced by one of the M3 inputs (noisy, blurred, exposure-shifted, infrared-like ...) so the
    VAE also represents what the fusion model is given. ``upscale`` = (lo, hi): each crop is then enlarged
    by U[lo, hi] (LANCZOS, as the pipeline resizes) and cropped back to ``size``: the pipeline upscales most
    inputs to its working size, so that is the content density the VAE meets there."""

    def __init__(self, sources=None, size: int = 128, seed: int = 0, p_degraded: float = 0.3, data_root=None,
                 upscale: tuple[float, float] = (1.0, 1.0)):
        self.sources = list(sources) if sources is not None else m3.scan_sources(data_root)
        self.size, self.seed, self.p_degraded, self.upscale = size, seed, p_degraded, upscale

    def __iter__(self):
        wid, nw = _worker_split()
        gen = m3.M3Generator(self.sources, seed=self.seed + 7919, size=self.size)
        rng = np.random.default_rng([self.seed, wid])
        i = wid
        while True:
            if rng.random() < self.p_degraded:
                s = gen.sample(i)
                img = s.inputs[int(rng.integers(len(s.inputs)))]
            else:
                src = int(rng.integers(len(gen.sources)))
                img, _, _ = gen._load(src)
                img, _, _ = m3.random_crop(img, None, None, self.size, rng)
            if self.upscale[1] > 1.0:
                img = _enlarge_crop(img, float(rng.uniform(*self.upscale)), rng)
            i += nw
            yield to_tensor(img)


def _enlarge_crop(img: np.ndarray, scale: float, rng: np.random.Generator) -> np.ndarray:
    """``img`` enlarged by ``scale`` and cropped back to its own size at a random offset."""
    from PIL import Image

    h, w = img.shape[:2]
    nh, nw = max(h, round(h * scale)), max(w, round(w * scale))
    if (nh, nw) == (h, w):
        return img
    big = np.asarray(Image.fromarray(np.ascontiguousarray(img)).resize((nw, nh), Image.LANCZOS))
    y, x = int(rng.integers(nh - h + 1)), int(rng.integers(nw - w + 1))
    return big[y:y + h, x:x + w]


class FusionStream(IterableDataset):
    """M3 samples (instruction, input images, target) as tensors; disjoint index streams per worker/rank."""

    def __init__(self, sources=None, size: int = 256, seed: int = 0, mix=None, data_root=None, start: int = 0):
        self.sources = list(sources) if sources is not None else m3.scan_sources(data_root)
        self.size, self.seed, self.mix, self.start = size, seed, mix, start

    def __iter__(self):
        wid, nw = _worker_split()
        gen = m3.M3Generator(self.sources, seed=self.seed, size=self.size, mix=self.mix)
        i = self.start + wid
        while True:
            s = gen.sample(i)
            yield {"instruction": s.instruction, "inputs": [to_tensor(x) for x in s.inputs],
                   "target": to_tensor(s.target), "task": s.task}
            i += nw


def collate_samples(batch):
    return {"instruction": [b["instruction"] for b in batch], "inputs": [b["inputs"] for b in batch],
            "target": torch.stack([b["target"] for b in batch]), "task": [b["task"] for b in batch]}


def worker_init(_):
    torch.set_num_threads(1)


def make_loader(ds, batch_size: int | None, workers: int | None = None, collate=None) -> DataLoader:
    if workers is None:
        workers = max(0, min(14, (os.cpu_count() or 2) - 2))
    kw = dict(batch_size=batch_size, num_workers=workers, collate_fn=collate)
    if workers > 0:
        kw.update(persistent_workers=True, prefetch_factor=4, worker_init_fn=worker_init)
    return DataLoader(ds, **kw)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two tensors in [-1, 1] (computed on the 0..255 scale after rounding)."""
    a8 = a.float().clamp(-1, 1).add(1).mul(127.5).round()
    b8 = b.float().clamp(-1, 1).add(1).mul(127.5).round()
    mse = (a8 - b8).pow(2).mean().item()
    return float("inf") if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)

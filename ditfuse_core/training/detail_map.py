"""A linear map of each latent pixel that gives back the detail averaging loses, fitted on training images.

Why: averaging two sources halves the contrast of detail that only one of them has, and the VAE round trip
softens it a little more; Qabf, VIF and SSIM's contrast term all see that. Unsharp masking the average gives
it back in pixels (benchmarks/README.md, "Where the gap to averaging comes from"). The constructed transformer
(`average_init`) can apply any linear map of a latent pixel's channels exactly, in its value projection, so
the map is fitted here by least squares: from the latents of clean training crops (at the working size's
content density) to the latents of the same crops unsharp-masked. A latent pixel covers f × f image pixels,
so the map sharpens within that footprint and the decoder blends across; it is the same everywhere in the
image, so no token grid shows.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage


def unsharp(img: np.ndarray, sigma: float, amount: float) -> np.ndarray:
    """[H, W, 3] float 0–255: img + amount·(img − Gaussian(img, sigma)), clipped."""
    x = np.asarray(img, np.float64)
    return np.clip(x + amount * (x - ndimage.gaussian_filter(x, (sigma, sigma, 0))), 0, 255)


@torch.no_grad()
def fit_detail_map(vae, sources, sigma: float = 2.0, amount: float = 0.3, crops: int = 24, size: int = 256,
                   upscale: float = 2.0, seed: int = 0) -> tuple[torch.Tensor, dict]:
    """M [C, C] (float64) with M·z ≈ the latent of the unsharp-masked crop, for z the latent of a crop; C =
    the VAE's latent channels. Crops come from ``sources`` (m3 sources) enlarged by ``upscale`` with LANCZOS,
    as the pipeline enlarges most inputs. Returns M and a record (settings, relative residual)."""
    from .. import vae as vae_mod
    from .data import ImageCrops, to_tensor, to_uint8

    it = iter(ImageCrops(sources, size=size, seed=seed, p_degraded=0.0, upscale=(upscale, upscale)))
    src, dst = [], []
    for _ in range(crops):
        x = next(it)
        sharp = to_tensor(unsharp(to_uint8(x).astype(np.float64), sigma, amount).round().astype(np.uint8))
        for pix, acc in ((x, src), (sharp, dst)):
            z = vae_mod.encode(vae, pix[None], sample=False)[0].double().cpu()
            acc.append(z.reshape(z.shape[0], -1).T)
    zs, zt = torch.cat(src), torch.cat(dst)
    m = torch.linalg.lstsq(zs, zt).solution.T  # zt ≈ zs @ m.T, i.e. z' = M z per latent pixel
    # what the map leaves of the change sharpening makes (0: all of it; 1: none)
    resid = float(((zs @ m.T - zt) ** 2).sum() / ((zs - zt) ** 2).sum().clamp_min(1e-12))
    return m, {"sigma": sigma, "amount": amount, "crops": crops, "size": size, "upscale": upscale, "seed": seed,
               "relative_residual": round(resid, 4)}

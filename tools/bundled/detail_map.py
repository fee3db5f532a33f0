"""A linear map of each token's latent that gives back the detail averaging loses, fitted on training images.

Why: averaging two sources halves the contrast of detail that only one of them has; Qabf, VIF and SSIM's
contrast term all see that. Unsharp masking the average gives it back in pixels (docs/notes/findings.md, "Where
the gap to averaging comes from"). The constructed transformer (`average_init`) can apply any linear map of a
token's content exactly, in its value projection, so the map is fitted here by least squares: from the latents
of clean training crops (at the working size's content density) to the latents of the same crops
unsharp-masked. A token of the bundled model covers 4 × 4 latent pixels (16 × 16 working pixels); each latent
pixel of its linear autoencoder is one 4 × 4 pixel block with no overlap, so a map of single latent pixels
could only sharpen inside a block, while a token map sharpens across its 16 blocks (relative residual 0.13
against 0.46 for the bundled σ 8 px, amount 0.1). The map is the same on every token.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage


def unsharp(img: np.ndarray, sigma: float, amount: float) -> np.ndarray:
    """[H, W, 3] float 0–255: img + amount·(img − Gaussian(img, sigma)), clipped."""
    x = np.asarray(img, np.float64)
    return np.clip(x + amount * (x - ndimage.gaussian_filter(x, (sigma, sigma, 0))), 0, 255)


@torch.no_grad()
def fit_detail_map(vae, sources, sigma: float = 2.0, amount: float = 0.3, patch: int = 1, crops: int = 96,
                   size: int = 256, upscale: float = 2.0, seed: int = 0) -> tuple[torch.Tensor, dict]:
    """M [n, n] (float64), n = C·patch², with M·z ≈ the latent of the unsharp-masked crop for z a token of
    the crop's latent (patch × patch latent pixels, flattened as (channel, row, col) like the transformer's
    patches; C = the VAE's latent channels). Crops come from ``sources`` (m3 sources) enlarged by ``upscale``
    with LANCZOS, as the pipeline enlarges its inputs. Returns M and a record (settings, relative residual)."""
    from ditfuse_core import vae as vae_mod
    from ditfuse_core.training.data import ImageCrops, to_tensor, to_uint8

    it = iter(ImageCrops(sources, size=size, seed=seed, p_degraded=0.0, upscale=(upscale, upscale)))
    src, dst = [], []
    for _ in range(crops):
        x = next(it)
        sharp = to_tensor(unsharp(to_uint8(x).astype(np.float64), sigma, amount).round().astype(np.uint8))
        for pix, acc in ((x, src), (sharp, dst)):
            z = vae_mod.encode(vae, pix[None], sample=False).double().cpu()
            acc.append(F.unfold(z, patch, stride=patch)[0].T)
    zs, zt = torch.cat(src), torch.cat(dst)
    m = torch.linalg.lstsq(zs, zt).solution.T  # zt ≈ zs @ m.T, i.e. z' = M z per token
    # what the map leaves of the change sharpening makes (0: all of it; 1: none)
    resid = float(((zs @ m.T - zt) ** 2).sum() / ((zs - zt) ** 2).sum().clamp_min(1e-12))
    return m, {"sigma": sigma, "amount": amount, "patch": patch, "crops": crops, "size": size,
               "upscale": upscale, "seed": seed, "relative_residual": round(resid, 4)}

"""The multi-focus filter of the constructed model: a linear filter of the latent average, across tokens,
that the prompt switches on for multi-focus pairs.

Why: on multi-focus pairs every sharpening of the average costs SSIM (the detail map that wins Qabf and VIF
on IVIF/MEF loses SSIM on Lytro), while a filter with a gain per octave band of the average can beat
averaging on all three metrics (`docs/notes/findings.md`: the best one measured through the
model's data path). Its coarse bands reach beyond a token (16 working px), which a map of one token cannot
see, so the construction adds a smooth attention head over neighbouring tokens: the filter's latent is
  D·z + O·Σ_j w(j − i)·P·z_j
for token i of the latent average z, with D a map of the token itself, P the leading principal directions of
the smoothed tokens, O their map back, and w the attention kernel over token offsets (`token_kernel`: what
the head's position logits give, normalised over the grid as softmax is). D and O are fitted by least squares
on training crops to the latents of the band-filtered crops, minus the model's detail map M (the filter adds
to M·z; `average_init` builds it into the model).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from .constants import BAND_SIGMAS, FREQS, KERNEL


def band_filter(img: np.ndarray, gains) -> np.ndarray:
    """[H, W, 3] float 0–255: img + Σ gains[i]·(G_σi − G_σi+1)(img), clipped."""
    x = np.asarray(img, np.float64)
    blur = [x if s == 0 else ndimage.gaussian_filter(x, (s, s, 0)) for s in BAND_SIGMAS]
    y = x + sum(float(g) * (blur[i] - blur[i + 1]) for i, g in enumerate(gains))
    return np.clip(y, 0, 255)


def kernel_logit(delta: torch.Tensor) -> torch.Tensor:
    """Per-axis logit of a token offset (0 at offset 0)."""
    return sum(g * (torch.cos(FREQS[f] * delta) - 1.0) for f, g in KERNEL)


def token_kernel(n: int) -> torch.Tensor:
    """[n, n] weights of token j for token i along one axis of an n-token grid (unnormalised)."""
    idx = torch.arange(n, dtype=torch.float64)
    return torch.exp(kernel_logit(idx[None, :] - idx[:, None]))


def smooth_tokens(t: torch.Tensor) -> torch.Tensor:
    """[B, F, h, w] token grid → the attention head's weighted mean over the grid (normalised per token)."""
    kh, kw = token_kernel(t.shape[2]).to(t), token_kernel(t.shape[3]).to(t)
    num = torch.einsum("ij,bfjk,lk->bfil", kh, t, kw)
    return num / (kh.sum(1)[:, None] * kw.sum(1)[None, :])


def token_grid(z: torch.Tensor, patch: int) -> torch.Tensor:
    """[B, C, h, w] latents → [B, C·p², h/p, w/p] tokens, flattened (channel, row, col) as the patches."""
    b, c, h, w = z.shape
    return F.unfold(z, patch, stride=patch).reshape(b, c * patch * patch, h // patch, w // patch)


def apply(focus: dict, z: torch.Tensor, patch: int) -> torch.Tensor:
    """What the filter adds to the detail-mapped latent average z [B, C, h, w] (for tests and probes)."""
    t = token_grid(z.double(), patch)
    s = smooth_tokens(torch.einsum("rf,bfhw->brhw", focus["P"].double(), t))
    d = torch.einsum("of,bfhw->bohw", focus["D"].double(), t) + torch.einsum("or,brhw->bohw", focus["O"].double(), s)
    return F.fold(d.flatten(2), z.shape[2:], patch, stride=patch).to(z.dtype)


@torch.no_grad()
def fit_focus_map(vae, sources, gains, latent_map: torch.Tensor, patch: int = 4, rank: int = 64,
                  crops: int = 48, size: int = 384, upscale: float = 2.0, seed: int = 0) -> tuple[dict, dict]:
    """D [n, n], P [rank, n], O [n, rank] (float64, n = C·p²) such that M·z + D·z + O·smooth(P·z) ≈ the latent
    of the band-filtered crop, for the tokens z of training crops enlarged by ``upscale`` (as the pipeline
    enlarges its inputs). ``latent_map`` = M, the model's detail map. Returns the maps and a record."""
    from ditfuse_core import vae as vae_mod
    from ditfuse_core.training.data import ImageCrops, to_tensor, to_uint8

    it = iter(ImageCrops(sources, size=size, seed=seed, p_degraded=0.0, upscale=(upscale, upscale)))
    own, smooth_in, want = [], [], []
    for _ in range(crops):
        x = next(it)
        y = to_tensor(band_filter(to_uint8(x).astype(np.float64), gains).round().astype(np.uint8))
        t = token_grid(vae_mod.encode(vae, x[None], sample=False).double().cpu(), patch)
        ty = token_grid(vae_mod.encode(vae, y[None], sample=False).double().cpu(), patch)
        own.append(t)
        smooth_in.append(smooth_tokens(t))
        want.append(ty)
    rows = lambda ts: torch.cat([u.flatten(2)[0].T for u in ts])  # noqa: E731
    z, zs, zy = rows(own), rows(smooth_in), rows(want)
    m = latent_map.to(torch.float64)
    target = zy - z @ m.T
    p = torch.linalg.svd(zs, full_matrices=False)[2][:rank]  # leading directions of the smoothed tokens
    feats = torch.cat([z, zs @ p.T], 1)  # smoothing is linear: smooth(P z) = P smooth(z)
    sol = torch.linalg.lstsq(feats, target).solution
    n = z.shape[1]
    d, o = sol[:n].T.contiguous(), sol[n:].T.contiguous()
    resid = float(((feats @ sol - target) ** 2).sum() / (target ** 2).sum().clamp_min(1e-12))
    whole = float(((z @ m.T + feats @ sol - zy) ** 2).sum() / ((z - zy) ** 2).sum().clamp_min(1e-12))
    return {"D": d, "P": p.contiguous(), "O": o}, {
        "gains": [float(g) for g in gains], "band_sigmas": list(BAND_SIGMAS), "rank": rank, "crops": crops,
        "size": size, "upscale": upscale, "seed": seed, "kernel": [list(k) for k in KERNEL],
        "relative_residual": round(resid, 4), "relative_residual_of_filter": round(whole, 4)}


def gate_token_ids(tokenizer) -> list[int]:
    """Token ids that switch the filter off: per IVIF/MEF subtag and control/segmentation tag, the first token
    of its prompt that no multi-focus prompt has (the tag's own first piece, e.g. "MO" of MODALITIES)."""
    from ditfuse_core import prompts

    mff = set(tokenizer.encode(prompts.wrap(prompts.fusion_prompt("mff"))))
    ids = []
    for text in (prompts.fusion_prompt("ivif"), prompts.fusion_prompt("mef"), prompts.control_prompt("LIGHT+"),
                 prompts.segmentation_prompt("cow")):
        ids.append(next(i for i in tokenizer.encode(prompts.wrap(text)) if i not in mff))
    return ids


def kernel_sigma() -> float:
    """The kernel's width in tokens (from its curvature at 0), for the record."""
    return 1.0 / math.sqrt(sum(g * FREQS[f] ** 2 for f, g in KERNEL))

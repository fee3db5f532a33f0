"""Flow-matching Euler sampler with DiTFuse's three guidance branches.

x_t = t·x1 + (1−t)·x0 (x0 noise, x1 data); the model predicts x1 − x0; Euler from t=0 to t=1 on a uniform
grid. Guidance: v = uncond + img_cfg·(img − uncond) + cfg·(cond − img)
             = (1 − img_cfg)·uncond + (img_cfg − cfg)·img + cfg·cond,
so a branch whose weight is zero is not computed at all (cfg = img_cfg = 1 needs only `cond`).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from . import cancel
from .sequence import Branch

BRANCHES = ("cond", "uncond", "img")


@dataclass
class Branches:
    """Everything one sample is conditioned on: its three branches and its input-image latents."""

    cond: Branch
    uncond: Branch
    img: Branch
    image_latents: list[torch.Tensor]  # [1, C, h, w] each, scaled

    def branch(self, name: str) -> Branch:
        return getattr(self, name)


def branch_weights(cfg: float, img_cfg: float) -> dict[str, float]:
    """Linear weights of the three branch velocities; zero-weight branches are skipped."""
    w = {"cond": cfg, "uncond": 1.0 - img_cfg, "img": img_cfg - cfg}
    return {k: v for k, v in w.items() if v != 0.0}


def timesteps(steps: int) -> torch.Tensor:
    """The authors' grid: linspace(0, 1, steps + 1) in float32."""
    if steps < 1:
        raise ValueError("steps must be >= 1")
    return torch.linspace(0, 1, steps + 1, dtype=torch.float32)


def initial_noise(seed: int, n: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Noise for n samples from CPU generators seeded seed+i: the same image on every device and whatever
    the batch size."""
    out = []
    for i in range(n):
        g = torch.Generator("cpu").manual_seed(int(seed) + i)
        out.append(torch.randn((1, *shape), generator=g, dtype=torch.float32))
    return torch.cat(out)


@torch.no_grad()
def sample(model, branches: list[Branches], noise: torch.Tensor, steps: int, cfg: float, img_cfg: float,
           use_cache: bool = True, batch_branches: bool = True,
           progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Integrate from noise [B,C,h,w] (fp32, any device) to latents. One Branches per sample."""
    if len(branches) != noise.shape[0]:
        raise ValueError(f"{len(branches)} samples of branches for {noise.shape[0]} noise samples")
    weights = branch_weights(cfg, img_cfg)  # never empty: the weights sum to 1
    names = list(weights)
    device = model.embed_tokens.weight.device
    x = noise.to(device, torch.float32)
    n_tok = (x.shape[-2] // model.config.patch_size) * (x.shape[-1] // model.config.patch_size)
    rows = [(i, name) for name in names for i in range(len(branches))]
    row_branch = [branches[i].branch(name) for i, name in rows]
    row_images = [branches[i].image_latents for i, _ in rows]

    groups = [list(range(len(rows)))] if batch_branches else [[r] for r in range(len(rows))]
    caches = [model.prefill([row_branch[r] for r in g], [row_images[r] for r in g], n_tok) if use_cache else None
              for g in groups]

    grid = timesteps(steps)
    for s in range(steps):
        cancel.check()  # also checked between layers and attention chunks (transformer)
        vel = torch.empty(len(rows), *x.shape[1:], device=device, dtype=torch.float32)
        for g, cache in zip(groups, caches):
            xin = torch.stack([x[rows[r][0]] for r in g])
            t = grid[s].expand(len(g)).to(device)
            if cache is not None:
                out = model.step(xin, t, cache)
            else:
                out = torch.cat([model.forward_branch(xin[j : j + 1], t[j : j + 1], row_branch[r], row_images[r])
                                 for j, r in enumerate(g)])
            vel[g] = out.float()
        v = torch.zeros_like(x)
        for r, (i, name) in enumerate(rows):
            v[i] += weights[name] * vel[r]
        x = x + (grid[s + 1] - grid[s]).item() * v
        if not torch.isfinite(x).all():  # fail here rather than decode a black image reported as success
            raise FloatingPointError(f"sampling produced NaN/inf at step {s + 1} of {steps} (guidance {cfg}/"
                                     f"{img_cfg}; try fp32 or other guidance values)")
        if progress is not None:
            progress(s + 1, steps)
    return x

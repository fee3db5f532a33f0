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
from .kv_cache import KV_CACHE

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


OFFLOAD = ("none", "kv_cpu", "layers")


def engine_options(batch_branches: bool | str = "auto", kv_cache: str | None = None,
                   offload: str = "none") -> tuple[bool | str, str]:
    """(batch_branches, kv_cache) checked, kv_cache resolved: None is "cpu" when offloading, else "device"."""
    if offload not in OFFLOAD:
        raise ValueError(f"offload must be one of {', '.join(OFFLOAD)}, not {offload!r}")
    if batch_branches not in (True, False, "auto"):
        raise ValueError(f"batch_branches must be True, False or 'auto', not {batch_branches!r}")
    if kv_cache is None:
        kv_cache = "device" if offload == "none" else "cpu"
    elif kv_cache not in KV_CACHE:
        raise ValueError(f"kv_cache must be one of {', '.join(KV_CACHE)} or None, not {kv_cache!r}")
    elif offload == "kv_cpu" and kv_cache != "cpu":
        raise ValueError(f"offload 'kv_cpu' keeps the KV cache on the CPU; kv_cache {kv_cache!r} contradicts it")
    return batch_branches, kv_cache


def batch_fits(model, n_rows: int, n_tokens: int, device: torch.device) -> bool:
    """batch_branches="auto": batched unless a CUDA device has less free memory than twice a batched step's
    activations (hidden states, q/k/v/o, the MLP's gate/up and product: ≈ (6·D + 3·I) values per token and
    row); batching needs more of it than one row at a time, and the cache is already allocated. On a CPU the
    batch costs no more than rows one by one: batched."""
    if device.type != "cuda":
        return True
    free, _ = torch.cuda.mem_get_info(device)
    c = model.config
    per_token = (6 * c.hidden_size + 3 * c.intermediate_size) * torch.finfo(model.dtype).bits // 8
    return free > 2 * n_rows * (1 + n_tokens) * per_token


@torch.no_grad()
def sample(model, branches: list[Branches], noise: torch.Tensor, steps: int, cfg: float, img_cfg: float,
           use_cache: bool = True, batch_branches: bool | str = "auto",
           progress: Callable[[int, int], None] | None = None, kv_cache: str | None = None,
           offload: str = "none") -> torch.Tensor:
    """Integrate from noise [B,C,h,w] (fp32, any device) to latents. One Branches per sample.

    Engine options (the result is the same whatever they are, except kv_cache "fp8"):
      batch_branches: True: the guidance branches (and samples) of a step run as one batch (fastest);
        False: one by one (a third of the activation memory); "auto": batched unless a CUDA device lacks the
        free memory (`batch_fits`).
      kv_cache: where the condition tokens' keys/values live: "device" (model dtype); "fp8" (e4m3fn on the
        device with power-of-two scales per row and head, upcast per layer: half of bf16, not exact); "cpu"
        (pinned on CUDA, each layer's rows copied to the device at use). None: "cpu" when offload is set,
        else "device".
      offload: "none"; "kv_cpu": the KV cache on the CPU (= kv_cache "cpu"); "layers": also the transformer
        blocks on the CPU, each copied to the device just in time (`model.offload_layers`; they stay there
        after the call). On a CPU both only change where nothing moves."""
    if len(branches) != noise.shape[0]:
        raise ValueError(f"{len(branches)} samples of branches for {noise.shape[0]} noise samples")
    device = model.embed_tokens.weight.device
    batch_branches, kv_cache = engine_options(batch_branches, kv_cache, offload)
    if offload == "layers" and not model.layers_offloaded:
        model.offload_layers(device)
    weights = branch_weights(cfg, img_cfg)  # never empty: the weights sum to 1
    names = list(weights)
    x = noise.to(device, torch.float32)
    n_tok = (x.shape[-2] // model.config.patch_size) * (x.shape[-1] // model.config.patch_size)
    rows = [(i, name) for name in names for i in range(len(branches))]
    row_branch = [branches[i].branch(name) for i, name in rows]
    row_images = [branches[i].image_latents for i, _ in rows]
    sample_of_row = torch.tensor([i for i, _ in rows], device=device)
    row_weight = [weights[name] for _, name in rows]

    if progress is not None:  # 0 first: a bar appears (and Cancel is read) before the prefill, not after step 1
        progress(0, steps)
    if batch_branches == "auto":
        batch_branches = batch_fits(model, len(rows), n_tok, device)
    groups = [range(len(rows))] if batch_branches else [range(r, r + 1) for r in range(len(rows))]
    caches = [model.prefill([row_branch[r] for r in g], [row_images[r] for r in g], n_tok, kv_cache)
              if use_cache else None for g in groups]

    grid = timesteps(steps)
    t_dev = grid.to(device)
    dts = (grid[1:] - grid[:-1]).tolist()  # the step sizes as Python floats, as before (float32 values)
    check_now = device.type == "cpu"  # elsewhere a check per step would wait for the device: check at the end
    finite = []
    vel = torch.empty(len(rows), *x.shape[1:], device=device, dtype=torch.float32)
    v = torch.empty_like(x)
    for s in range(steps):
        cancel.check()  # also checked between layers and attention chunks (transformer)
        for g, cache in zip(groups, caches):
            xin = x.index_select(0, sample_of_row[g.start : g.stop])
            t = t_dev[s].expand(len(g))
            if cache is not None:
                out = model.step(xin, t, cache)
            else:
                out = torch.cat([model.forward_branch(xin[j : j + 1], t[j : j + 1], row_branch[r], row_images[r])
                                 for j, r in enumerate(g)])
            vel[g.start : g.stop] = out
        v.zero_()
        for r, (i, _) in enumerate(rows):
            v[i] += row_weight[r] * vel[r]
        x = x + dts[s] * v
        if check_now:
            _check_finite(torch.isfinite(x).all(), s, steps, cfg, img_cfg)
        else:
            finite.append(torch.isfinite(x).all())
        if progress is not None:
            progress(s + 1, steps)
    if finite:
        ok = torch.stack(finite).cpu()
        if not ok.all():
            _check_finite(False, int((~ok).nonzero()[0]), steps, cfg, img_cfg)
    return x


def _check_finite(ok, s: int, steps: int, cfg: float, img_cfg: float) -> None:
    """Fail here rather than decode a black image reported as success."""
    if not ok:
        raise FloatingPointError(f"sampling produced NaN/inf at step {s + 1} of {steps} (guidance {cfg}/"
                                 f"{img_cfg}; try fp32 or other guidance values)")

"""Train a small diffusers ``AutoencoderKL`` for the bundled model (the pipeline's VAE code runs it unchanged).

    python -m ditfuse_core.training.vae_trainer --out runs/vae --minutes 30 [--data .devdata/pack] [--f 4 --latent 8]

Downsample factor ``f`` = 2 ** (len(channels) - 1). The transformer's patch size p must satisfy f·p = 16
(one token per 16×16 px). After training, ``scaling_factor`` is set to 1 / std of the (sampled) latents so
the scaled latents have about unit std, and the folder is written in diffusers layout
(``config.json`` + ``diffusion_pytorch_model.safetensors``).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..devices import cpu_has_native_bf16
from ..vae import downsample_factor
from .data import ImageCrops, make_loader, psnr


def build_vae(f: int = 4, latent_channels: int = 8, base: int = 32, max_ch: int = 64, layers: int = 1,
              logvar_init: float = -8.0):
    """Small AutoencoderKL. ``logvar_init`` starts the posterior nearly deterministic (std e^-4), which
    makes reconstruction converge much faster than diffusers' default std 1 at initialisation."""
    from diffusers import AutoencoderKL

    n = int(round(math.log2(f))) + 1
    assert 2 ** (n - 1) == f, "f must be a power of two"
    ch = tuple(min(base * 2 ** i, max_ch) for i in range(n))
    groups = math.gcd(*ch, 16) if len(ch) > 1 else min(16, ch[0])
    vae = AutoencoderKL(
        in_channels=3, out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=ch, layers_per_block=layers, latent_channels=latent_channels,
        norm_num_groups=groups, sample_size=256, scaling_factor=1.0, force_upcast=False,
        mid_block_add_attention=False,
    )
    if logvar_init is not None and vae.quant_conv is not None:
        with torch.no_grad():
            vae.quant_conv.bias[latent_channels:].fill_(logvar_init)
    return vae


def _lr_at(frac: float, base: float, warm: float = 0.03) -> float:
    if frac < warm:
        return base * max(frac / warm, 0.01)
    p = min(1.0, (frac - warm) / (1 - warm))
    return base * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * p)))


def kl_loss(post) -> torch.Tensor:
    return 0.5 * (post.mean.pow(2) + post.var - 1.0 - post.logvar).mean()


@torch.no_grad()
def calibrate_scaling(vae, batches, device, seed: int = 0) -> float:
    g = torch.Generator(device="cpu").manual_seed(seed)
    zs = []
    for x in batches:
        post = vae.encode(x.to(device)).latent_dist
        noise = torch.randn(post.mean.shape, generator=g).to(device)
        zs.append((post.mean + post.std * noise).float().cpu())
    z = torch.cat(zs)
    return float(1.0 / z.std().clamp_min(1e-6))


def eval_images(root=None, max_side: int = 512):
    """(name, uint8 [H,W,3]) for the shared/data/eval images (both images of every pair)."""
    from PIL import Image

    from .m3 import data_root

    root = Path(root) if root else data_root() / "eval"
    pats = ["ivif/tno/*/*.png", "ivif/roadscene/*/*.jpg", "mff/lytro/*.png", "mef/mefb/*.*"]
    out = []
    for pat in pats:
        for p in sorted(root.glob(pat)):
            if "reference" in p.parts:
                continue
            with Image.open(p) as im:
                im = im.convert("RGB")
                w, h = im.size
                s = min(1.0, max_side / max(w, h))
                nw, nh = max(16, int(w * s) // 16 * 16), max(16, int(h * s) // 16 * 16)
                if (nw, nh) != (w, h):
                    im = im.resize((nw, nh), Image.BICUBIC)
                out.append((str(p.relative_to(root)), np.asarray(im)))
    return out


@torch.no_grad()
def eval_psnr(vae, images, device="cpu", sample: bool = True, seed: int = 0) -> dict:
    from .data import to_tensor

    vae.eval()
    per = {}
    for name, img in images:
        x = to_tensor(img)[None].to(device, next(vae.parameters()).dtype)
        post = vae.encode(x).latent_dist
        z = post.mean
        if sample:
            g = torch.Generator(device="cpu").manual_seed(seed)
            z = z + post.std * torch.randn(z.shape, generator=g).to(device, z.dtype)
        y = vae.decode(z).sample
        per[name] = psnr(y.float().cpu(), x.float().cpu())
    groups = {}
    for k, v in per.items():
        groups.setdefault(k.split("/")[0] + "/" + k.split("/")[1], []).append(v)
    return {"mean": float(np.mean(list(per.values()))) if per else float("nan"),
            "by_set": {k: float(np.mean(v)) for k, v in groups.items()}, "n": len(per)}


def train_vae(out: str, minutes: float | None = 30.0, steps: int | None = None, batch: int = 16,
              size: int = 128, lr: float = 1e-3, f: int = 4, latent: int = 8, base: int = 32, max_ch: int = 64,
              kl: float = 1e-6, device: str | None = None, seed: int = 0, data_root=None, workers=None,
              log_every: int = 50, vae=None, eval_root=None, eval_max_side: int = 512, eval_stride: int = 1,
              p_degraded: float = 0.15, decoder_only: bool = False, grad_weight: float = 0.0,
              mix_weight: float = 0.0, upscale: tuple[float, float] = (1.0, 1.0), record: dict | None = None) -> dict:
    """Train until ``minutes`` of wall time or ``steps`` (whichever comes first); the lr schedule
    (warm-up, cosine) follows the elapsed fraction of that budget. Returns a summary dict.
    ``decoder_only`` (with ``vae``): fine-tune the decoder of a trained VAE; the encoder, its latent space
    and ``scaling_factor`` stay as they are, so a transformer trained on them still fits. ``grad_weight``
    adds an L1 loss on horizontal/vertical differences (edge fidelity, which fusion metrics weigh).
    ``mix_weight`` adds the same reconstruction loss for decode(λ·z₁ + (1 − λ)·z₂) against λ·x₁ + (1 − λ)·x₂
    (two crops of the batch, λ ∈ [0.25, 0.75]): fusion mixes latents, and a decoder that is not linear
    along such mixes loses detail there that it keeps on each image alone. ``upscale``: see ``ImageCrops``.
    ``record``: extra keys for the summary and train_log.json (the CLI's command and ``--init``'s record)."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if vae is None:
        vae = build_vae(f, latent, base, max_ch)
    vae.to(device).train()
    n_params = sum(p.numel() for p in vae.parameters())
    if decoder_only:
        for mod in (vae.encoder, vae.quant_conv):
            if mod is not None:
                mod.requires_grad_(False)
    opt = torch.optim.AdamW([p for p in vae.parameters() if p.requires_grad], lr=lr, betas=(0.9, 0.99),
                            weight_decay=0.0)
    ds = ImageCrops(size=size, seed=seed, data_root=data_root, p_degraded=p_degraded, upscale=upscale)
    loader = make_loader(ds, batch, workers)
    # bf16 autocast where the hardware runs it natively (2.6x faster on this AMX CPU; the pipeline then runs
    # the VAE in bf16 too, see devices.resolve_vae_dtype)
    amp = "cuda" if device.startswith("cuda") else "cpu"
    use_bf16 = torch.cuda.is_bf16_supported() if amp == "cuda" else cpu_has_native_bf16()
    budget_s = minutes * 60 if minutes else None
    t0 = time.time()
    log = []
    step = 0
    calib = []
    it = iter(loader)
    while True:
        el = time.time() - t0
        frac = max(el / budget_s if budget_s else 0, step / steps if steps else 0)
        if frac >= 1.0:
            break
        for g in opt.param_groups:
            g["lr"] = _lr_at(frac, lr)
        x = next(it).to(device, non_blocking=True)
        with torch.autocast(amp, dtype=torch.bfloat16, enabled=use_bf16):
            post = vae.encode(x).latent_dist
            z = post.sample()
            y = vae.decode(z).sample
        y = y.float()
        rec = F.l1_loss(y, x) + F.mse_loss(y, x)
        if grad_weight:
            rec = rec + grad_weight * (F.l1_loss(y.diff(dim=-1), x.diff(dim=-1)) + F.l1_loss(y.diff(dim=-2), x.diff(dim=-2)))
        mix = torch.zeros(())
        if mix_weight:
            with torch.autocast(amp, dtype=torch.bfloat16, enabled=use_bf16):
                lam = torch.rand(x.shape[0], 1, 1, 1, device=x.device) * 0.5 + 0.25
                ym = vae.decode(lam * z + (1 - lam) * z.roll(1, 0)).sample.float()
            xm = lam * x + (1 - lam) * x.roll(1, 0)
            mix = F.l1_loss(ym, xm) + F.mse_loss(ym, xm)
            rec = rec + mix_weight * mix
        loss = rec if decoder_only else rec + kl * kl_loss(post)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        step += 1
        if step % log_every == 0 or step == 1:
            p = psnr(y.detach().cpu(), x.cpu())
            rec_ = {"step": step, "time_s": round(time.time() - t0, 1), "loss": float(loss.detach()), "psnr_train": p,
                    "lr": opt.param_groups[0]["lr"]}
            if mix_weight:
                rec_["mix_loss"] = float(mix.detach())
            log.append(rec_)
            print(json.dumps(rec_), flush=True)
        if len(calib) < 8 and step % 7 == 0:
            calib.append(x[:8].detach().cpu())
    vae.eval()
    if decoder_only:
        scale = vae.config.scaling_factor
    else:
        scale = calibrate_scaling(vae, calib or [x.detach().cpu()], device)
        vae.register_to_config(scaling_factor=scale)
    vae.to("cpu").float()
    vae.save_pretrained(str(out), safe_serialization=True)
    summary = {"steps": step, "wall_s": round(time.time() - t0, 1), "params": n_params, "device": device,
               "batch": batch, "crop": size, "scaling_factor": scale, "f": downsample_factor(vae),
               "latent_channels": vae.config.latent_channels, "bf16_autocast": use_bf16, "log": log}
    summary.update(record or {})
    if mix_weight or grad_weight or upscale != (1.0, 1.0) or decoder_only:
        summary.update(mix_weight=mix_weight, grad_weight=grad_weight, upscale=list(upscale),
                       decoder_only=decoder_only)
    imgs = []
    if eval_stride > 0:
        try:
            imgs = eval_images(eval_root, eval_max_side)[::eval_stride]
        except Exception:
            imgs = []
    if imgs:
        summary["eval_psnr"] = eval_psnr(vae, imgs)
    (out / "train_log.json").write_text(json.dumps(summary, indent=1))
    return summary


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--f", type=int, default=4)
    ap.add_argument("--latent", type=int, default=8)
    ap.add_argument("--base", type=int, default=32)
    ap.add_argument("--max-ch", type=int, default=64)
    ap.add_argument("--device", default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", default=None, help="shared/data (default) or a pack folder")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--eval-stride", type=int, default=1, help="evaluate every k-th eval image")
    ap.add_argument("--init", default=None, help="start from this trained VAE folder")
    ap.add_argument("--decoder-only", action="store_true", help="with --init: fine-tune only the decoder")
    ap.add_argument("--grad-weight", type=float, default=0.0, help="weight of the L1 loss on image differences")
    ap.add_argument("--mix-weight", type=float, default=0.0,
                    help="weight of the loss on decoded latent mixes of two crops (linear along mixes)")
    ap.add_argument("--upscale", default="1,1", help="lo,hi: enlarge each crop by U[lo, hi] (working-size density)")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    init, record = None, None
    if a.init:
        from diffusers import AutoencoderKL

        init = AutoencoderKL.from_pretrained(a.init, torch_dtype=torch.float32)
        # provenance for the model card: what this VAE was fine-tuned from, and how
        log = Path(a.init) / "train_log.json"
        record = {"command": "python -m ditfuse_core.training.vae_trainer " + " ".join(sys.argv[1:] if argv is None else argv),
                  "init": {k: v for k, v in json.loads(log.read_text()).items() if k != "log"} if log.exists() else {}}
    elif a.decoder_only:
        raise SystemExit("--decoder-only needs --init")
    s = train_vae(a.out, a.minutes, a.steps, a.batch, a.size, a.lr, a.f, a.latent, a.base, a.max_ch,
                  device=a.device, seed=a.seed, data_root=a.data, workers=a.workers,
                  eval_stride=a.eval_stride, vae=init, decoder_only=a.decoder_only, grad_weight=a.grad_weight,
                  mix_weight=a.mix_weight, upscale=tuple(float(v) for v in a.upscale.split(",")), record=record)
    s.pop("log")
    print(json.dumps(s, indent=1))


if __name__ == "__main__":
    main()

"""VAE encode/decode in the model's scaled latent space.

Inputs are encoded by SAMPLING the posterior (as the authors and OmniGen's training do) with a seeded CPU
generator, so the result is the same on every device; `sample=False` takes the posterior mean instead.

Cancel: `cancel.check()` runs before and after each encode/decode and before every convolution of a convolutional
VAE (forward pre-hooks, so diffusers' tiled and sliced paths are covered too). The bundled LinearAutoencoder is
one strided convolution each way (~0.1 s at 2048 px on a 2-core CPU) and needs nothing finer.
"""
from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKL

from . import cancel


def load_vae(folder: str | Path, dtype: torch.dtype, device: str | torch.device):
    """An AutoencoderKL, or the bundled model's LinearAutoencoder (config `_class_name`)."""
    config = AutoencoderKL.load_config(str(folder))
    if config.get("_class_name") == "LinearAutoencoder":
        from .linear_autoencoder import LinearAutoencoder

        # two small matrix products: bf16 would cost the round trip its precision, and saves nothing
        return LinearAutoencoder.from_pretrained(str(folder), torch_dtype=torch.float32).to(device).eval()
    # SDXL's VAE overflows in fp16 (config force_upcast): keep it in fp32 then.
    if dtype == torch.float16 and config.get("force_upcast", False):
        dtype = torch.float32
    vae = AutoencoderKL.from_pretrained(str(folder), torch_dtype=dtype).to(device).eval()
    return vae.to(memory_format=torch.channels_last)


def _conv_input(x: torch.Tensor, vae: AutoencoderKL) -> torch.Tensor:
    """channels_last: the VAE is convolutions at full resolution, ~1.5× faster in this layout on CPU (oneDNN)
    and on GPUs with tensor cores; the weights are stored so by load_vae."""
    dev = next(vae.parameters()).device
    return x.to(dev, vae.dtype).contiguous(memory_format=torch.channels_last)


def _cancellable(vae) -> None:
    """Install (once per VAE) a pre-hook calling `cancel.check()` before each of its convolutions: an SDXL VAE
    at 2048 px is minutes of convolutions on a CPU, with no callback of its own."""
    if not vae.__dict__.get("_ditfuse_cancel_hooked"):
        for m in vae.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.register_forward_pre_hook(_check_hook)
        vae.__dict__["_ditfuse_cancel_hooked"] = True
    cancel.check()


def _check_hook(_module, _args) -> None:  # a module-level function: a hooked VAE can still be pickled
    cancel.check()


def downsample_factor(vae) -> int:
    return getattr(vae, "downsample_factor", None) or 2 ** (len(vae.config.block_out_channels) - 1)


def _scale_shift(vae):
    scale = vae.config.scaling_factor
    shift = getattr(vae.config, "shift_factor", None) or 0.0
    return scale, shift


@torch.no_grad()
def encode(vae: AutoencoderKL, pixels: torch.Tensor, seed: int | None = 0, sample: bool = True) -> torch.Tensor:
    """pixels [B,3,H,W] in [-1,1] → scaled latents [B,C,H/f,W/f] in float32."""
    dev = next(vae.parameters()).device
    _cancellable(vae)
    dist = vae.encode(_conv_input(pixels, vae)).latent_dist
    z = dist.mean.float()
    if sample:
        g = torch.Generator("cpu").manual_seed(int(seed or 0))
        eps = torch.randn(z.shape, generator=g, dtype=torch.float32).to(dev)
        z = z + dist.std.float() * eps
    scale, shift = _scale_shift(vae)
    cancel.check()
    return ((z - shift) * scale).contiguous()


def to_raw(vae: AutoencoderKL, latents: torch.Tensor) -> torch.Tensor:
    """Scaled latents → the VAE's raw latents (what ComfyUI keeps in a LATENT), float32."""
    scale, shift = _scale_shift(vae)
    return latents.float() / scale + shift


def from_raw(vae: AutoencoderKL, raw: torch.Tensor) -> torch.Tensor:
    scale, shift = _scale_shift(vae)
    return (raw.float() - shift) * scale


@torch.no_grad()
def decode_raw(vae: AutoencoderKL, raw: torch.Tensor) -> torch.Tensor:
    """raw latents → pixels [B,3,H,W] in [-1,1] (float32, on the VAE's device)."""
    _cancellable(vae)
    x = vae.decode(_conv_input(raw.float(), vae)).sample.float().clamp(-1, 1).contiguous()
    cancel.check()
    return x


def decode(vae: AutoencoderKL, latents: torch.Tensor) -> torch.Tensor:
    """scaled latents → pixels [B,3,H,W] in [-1,1]."""
    return decode_raw(vae, to_raw(vae, latents))

"""How much device memory one sampling call needs besides the weights: what a host's memory manager (ComfyUI's
`load_models_gpu(memory_required=…)`) must free before the call, so it frees that much and no more.

An estimate from the shapes, not a measurement: the exact KV cache of the condition tokens (every layer's keys
and values of every branch, as the cache keeps them), one step's activations (the time and output tokens of
all branches that run together through the widest block: attention projections and the MLP), the largest
single branch's prefill activations, and the VAE's decode of the output. Attention itself is chunked
(attention._sdpa), so no [L, L] score matrix is counted.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

TEXT_TOKENS = 160  # the longest standard prompt with its template (≈ 120) and a margin for instructions
NEGATIVE_TOKENS = 130  # OmniGen's negative prompt, wrapped
VAE_DECODE_UNITS_PER_PIXEL = 2178  # × dtype bytes: SDXL's VAE decoder at full resolution, as ComfyUI's sd.py budgets it


@dataclass
class SamplingShape:
    """What the memory of a call depends on."""

    height: int  # working size of the output, pixels
    width: int
    n_images: int = 2  # input images in the instruction
    branches: int = 3  # guidance branches computed (1 when cfg = img_cfg = 1)
    batched: bool = True  # branches in one batch (else one by one)


def sampling_bytes(config, shape: SamplingShape, dtype: torch.dtype, token_pixels: int = 16,
                   vae_factor: int = 8) -> int:
    """Bytes a call at `shape` needs on the device beyond the weights, for a transformer `config`
    (OmniGenTransformer2DModel's) computing in `dtype`."""
    size = torch.finfo(dtype).bits // 8 if dtype.is_floating_point else 4
    hidden, layers = config.hidden_size, config.num_layers
    kv_dim = config.num_key_value_heads * (hidden // config.num_attention_heads)
    n_out = (shape.height // token_pixels) * (shape.width // token_pixels)
    image_tokens = shape.n_images * n_out
    # condition lengths: cond = text + images; img = the images-only prompt; uncond = the negative prompt
    cond = [TEXT_TOKENS + image_tokens, 40 + image_tokens, NEGATIVE_TOKENS][: max(1, shape.branches)]
    rows = len(cond)
    longest = max(cond)
    kv_cache = layers * 2 * kv_dim * size * (rows * longest if shape.batched else sum(cond))
    width = max(3 * hidden + kv_dim * 2, 2 * config.intermediate_size) + 2 * hidden  # qkv or MLP, + residual
    step_rows = rows if shape.batched else 1
    step = step_rows * (1 + n_out) * width * size + rows * n_out * config.in_channels * 4 * 4  # + fp32 latents
    prefill = longest * width * size + longest * 2 * kv_dim * size  # one branch at a time
    out_pixels = (shape.height * shape.width)
    # a KL VAE (8×) decodes through full-resolution convolutions; the bundled linear autoencoder (4×) is one matmul
    vae = out_pixels * (VAE_DECODE_UNITS_PER_PIXEL * size if vae_factor >= 8 else 3 * 4 * 4)
    return int(kv_cache + max(step, prefill, vae))


def pipeline_sampling_bytes(pipe, height: int, width: int, n_images: int = 2, cfg: float | None = None,
                            img_cfg: float | None = None) -> int:
    """`sampling_bytes` for a DiTFusePipeline at a working size, with its sampling settings resolved ("model
    default" included) so the branch count is the one that will run."""
    from .sampler import branch_weights

    s = pipe.sampling(None, cfg, img_cfg)
    branches = len(branch_weights(s["cfg"], s["img_cfg"]))
    shape = SamplingShape(height, width, n_images, branches)
    return sampling_bytes(pipe.transformer.config, shape, pipe.dtype, pipe.token_pixels, pipe.vae_factor)

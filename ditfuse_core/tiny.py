"""Small random OmniGen-architecture models for tests, examples and as a training starting point.

Same code path as the real 3.8 B model, at a size that runs in milliseconds on a CPU.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import AutoencoderKL

from .transformer import DiTFuseTransformer


def tiny_transformer_config(hidden: int = 64, layers: int = 2, heads: int = 4, kv_heads: int | None = None,
                            intermediate: int = 128, in_channels: int = 4, patch_size: int = 2,
                            original_max_position_embeddings: int = 4096, pos_embed_max_size: int = 64,
                            seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    half = hidden // heads // 2
    return dict(
        in_channels=in_channels, patch_size=patch_size, hidden_size=hidden, rms_norm_eps=1e-5,
        num_attention_heads=heads, num_key_value_heads=kv_heads or heads, intermediate_size=intermediate,
        num_layers=layers, pad_token_id=32000, vocab_size=32064, max_position_embeddings=131072,
        original_max_position_embeddings=original_max_position_embeddings, rope_base=10000,
        rope_scaling={"short_factor": (1 + torch.rand(half, generator=g)).tolist(),
                      "long_factor": (1 + 10 * torch.rand(half, generator=g)).tolist()},
        pos_embed_max_size=pos_embed_max_size,
    )


def tiny_transformer(seed: int = 0, std: float = 0.05, **kw) -> DiTFuseTransformer:
    """Random weights N(0, std). The default 0.05 makes even a two-layer model's output depend visibly on every
    weight; at hidden 1024 it makes activations grow layer by layer until fp32 rounding is amplified ~100-fold
    per call: benchmarks that compare two implementations use 0.02, a trained Phi-3's initializer_range."""
    torch.manual_seed(seed)
    model = DiTFuseTransformer(**tiny_transformer_config(seed=seed, **kw))
    # diffusers leaves no weight at zero here, but make the output path clearly non-trivial anyway.
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0, std)
    return model.eval()


def tiny_vae(seed: int = 0, channels: tuple[int, ...] = (16, 16, 16, 16), latent_channels: int = 4,
             scaling_factor: float = 0.13025) -> AutoencoderKL:
    """SDXL-shaped (factor 8, 4 latent channels) but tiny."""
    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=latent_channels,
        down_block_types=("DownEncoderBlock2D",) * len(channels),
        up_block_types=("UpDecoderBlock2D",) * len(channels),
        block_out_channels=channels, layers_per_block=1, norm_num_groups=min(8, channels[0]),
        sample_size=64, scaling_factor=scaling_factor, force_upcast=True,
    ).eval()


def save_diffusers_folder(folder: str | Path, transformer: DiTFuseTransformer, vae: AutoencoderKL,
                          defaults: dict | None = None, card: dict | None = None) -> Path:
    """`transformer/`, `vae/` and `ditfuse.json` (default sampling settings; the tokenizer is the bundled
    Phi-3 one unless a tokenizer.json is placed beside them)."""
    folder = Path(folder)
    transformer.save_pretrained(folder / "transformer")
    vae.save_pretrained(folder / "vae")
    meta = {"defaults": defaults or {}, **(card or {})}
    (folder / "ditfuse.json").write_text(json.dumps(meta, indent=2))
    return folder

"""Recipes: the bundled "ditfuse-tiny" model's architecture, its training settings and sampling defaults."""
from __future__ import annotations

TOKEN_PX = 16  # one transformer token per 16×16 px (VAE factor × patch size), as in OmniGen


def tiny_transformer_config(latent_channels: int = 8, vae_factor: int = 4, hidden: int = 256, layers: int = 6,
                            head_dim: int = 64, intermediate: int = 768, pos_embed_max_size: int = 64) -> dict:
    """OmniGen architecture at a small size. Patch size p = 16 / vae_factor. Plain RoPE (all factors 1);
    original_max_position_embeddings 4096 keeps a 512×512 pair (~3.2k tokens) on the short factors, like
    training. pos_embed_max_size 64 allows up to 64·16 = 1024 px per side."""
    assert TOKEN_PX % vae_factor == 0
    heads = hidden // head_dim
    return dict(
        in_channels=latent_channels, patch_size=TOKEN_PX // vae_factor, hidden_size=hidden, rms_norm_eps=1e-5,
        num_attention_heads=heads, num_key_value_heads=heads, intermediate_size=intermediate, num_layers=layers,
        pad_token_id=32000, vocab_size=32064, max_position_embeddings=131072,
        original_max_position_embeddings=4096, rope_base=10000,
        rope_scaling={"short_factor": [1.0] * (head_dim // 2), "long_factor": [1.0] * (head_dim // 2)},
        pos_embed_max_size=pos_embed_max_size,
    )


# sampling defaults written to the model folder's ditfuse.json (cfg = img_cfg = 1: only the conditional
# branch runs; the tiny model is trained for that)
TINY_DEFAULTS = {"steps": 12, "cfg": 1.0, "img_cfg": 1.0, "max_side": 512}

# VAE: f = 4, 8 latent channels, channels (32, 64, 64), one resnet per level, no mid attention
TINY_VAE = {"f": 4, "latent": 8, "base": 32, "max_ch": 64}

# Training-data mix for the bundled model: mostly the three real fusion tasks and M3.
TINY_MIX = {"m3": 0.28, "ivif": 0.2, "mff": 0.18, "mef": 0.18, "control": 0.08, "seg": 0.08}

# settings per device kind
GPU = {"vae_batch": 32, "vae_size": 256, "vae_lr": 1e-3, "batch": 32, "sizes": [128, 192, 256, 320],
       "size_probs": [0.15, 0.25, 0.4, 0.2], "lr": 5e-4, "ema": 0.999}
CPU = {"vae_batch": 8, "vae_size": 128, "vae_lr": 1e-3, "batch": 4, "sizes": [128, 192, 256],
       "size_probs": [0.3, 0.45, 0.25], "lr": 5e-4, "ema": 0.998}

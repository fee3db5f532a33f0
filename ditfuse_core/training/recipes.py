"""Recipes: the bundled "ditfuse-tiny" model's architecture, its training settings and sampling defaults."""
from __future__ import annotations

TOKEN_PX = 16  # one transformer token per 16×16 px (VAE factor × patch size), as in OmniGen


def tiny_transformer_config(latent_channels: int = 16, vae_factor: int = 4, hidden: int = 256, layers: int = 6,
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
TINY_DEFAULTS = {"steps": 10, "cfg": 1.0, "img_cfg": 1.0, "max_side": 512}

# VAE: f = 4, 16 latent channels (3× compression: room for the ≥ 30 dB PSNR target), channels (32, 64, 64),
# one resnet per level, no mid attention
TINY_VAE = {"f": 4, "latent": 16, "base": 32, "max_ch": 64}

# Training-data mix for the bundled model: mostly the three real fusion tasks and M3.
TINY_MIX = {"m3": 0.28, "ivif": 0.2, "mff": 0.18, "mef": 0.18, "control": 0.08, "seg": 0.08}

# settings per device kind
GPU = {"vae_batch": 64, "vae_size": 128, "vae_lr": 1e-3, "batch": 32, "sizes": [128, 192, 256, 320, 384],
       "size_probs": [0.1, 0.2, 0.35, 0.2, 0.15], "lr": 8e-4, "ema": 0.999}
CPU = {"vae_batch": 8, "vae_size": 128, "vae_lr": 1e-3, "batch": 4, "sizes": [128, 192, 256],
       "size_probs": [0.3, 0.45, 0.25], "lr": 5e-4, "ema": 0.998}


def instruction_texts() -> list[str]:
    """Every wrapped branch text the bundled model can see in training or with the core's default prompts
    (all paraphrases, tags, class names, the negative prompt, image-only and ``<cfg>`` branches)."""
    from .. import m3, prompts

    texts = [prompts.NEGATIVE_PROMPT, prompts.image_only_prompt(1), prompts.image_only_prompt(2), "<cfg>"]
    for task in ("m3", "ivif", "mff", "mef"):
        for req in m3.REQUIREMENTS[task] + [m3._core_default(task) or ""]:
            texts.append(m3.fusion_instruction(task, req))
    for kind in m3.CONTROL_KINDS:
        for req in m3.CONTROL_REQUIREMENTS[kind] + [m3._core_default(kind) or ""]:
            texts.append(m3.control_instruction(kind, req))
    words = {m3.CLASS_WORDS.get(c, c) for c in m3.MSRC_CLASSES} | set(m3.MSRC_CLASSES)
    for w in sorted(words):
        for extra in m3.SEG_EXTRAS:
            texts.append(m3.seg_instruction(w, extra))
    return [prompts.wrap(t) for t in texts]


def used_token_ids(tokenizer) -> list[int]:
    from ..sequence import IMAGE_TAG

    ids = {0, 1, 2, 32000}
    for t in instruction_texts():
        for chunk in IMAGE_TAG.split(t):
            ids.update(tokenizer.encode(chunk))
    return sorted(ids)


def zero_unused_embeddings(transformer, tokenizer) -> int:
    """Zero the token-embedding rows the training data never uses: they would stay at their random
    initialisation (no gradient reaches them), so zero is the neutral value, and the checkpoint
    compresses well. Returns the number of rows kept."""
    import torch

    keep = torch.tensor(used_token_ids(tokenizer))
    w = transformer.embed_tokens.weight
    with torch.no_grad():
        saved = w[keep].clone()
        w.zero_()
        w[keep] = saved
    return int(keep.numel())

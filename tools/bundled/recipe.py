"""The bundled model's trainable architecture and vocabulary: a small OmniGen config and the token rows its texts use."""
from __future__ import annotations

from .constants import TOKEN_PX


def trainable_transformer_config(latent_channels: int = 16, vae_factor: int = 4, hidden: int = 256, layers: int = 6,
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


def instruction_texts() -> list[str]:
    """Every wrapped branch text the bundled model can see in training or with the core's prompts (standard
    prompts, presets, tags, class names, the negative prompt, image-only and ``<cfg>`` branches)."""
    from ditfuse_core import prompts
    from ditfuse_core.training import m3

    texts = [prompts.NEGATIVE_PROMPT, prompts.image_only_prompt(1), prompts.image_only_prompt(2), "<cfg>"]
    for task in prompts.FUSION_TASKS:
        for req in ["", *prompts.PRESETS[task]]:
            texts.append(prompts.fusion_prompt(task, req))
    texts += [prompts.control_prompt(kind) for kind in prompts.ADJUSTMENTS]
    words = {m3.CLASS_WORDS.get(c, c) for c in m3.MSRC_CLASSES} | set(m3.MSRC_CLASSES)
    for w in sorted(words):
        for extra in m3.SEG_EXTRAS:
            texts.append(prompts.segmentation_prompt(w, extra))
    return [prompts.wrap(t) for t in texts]


def used_token_ids(tokenizer) -> list[int]:
    from ditfuse_core.sequence import IMAGE_TAG

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

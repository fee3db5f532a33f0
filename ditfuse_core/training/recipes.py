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
# branch runs; the tiny model is trained for that). The small autoencoders lose less of an image the larger
# they work (benchmarks/README.md, "Working size"), so inputs are upscaled to max_side 1024 and at least 2× (min_scale),
# up to the position table (2048 px for the constructed transformer, 1024 for a trained tiny one).
TINY_DEFAULTS = {"steps": 10, "cfg": 1.0, "img_cfg": 1.0, "max_side": 1024, "min_scale": 2.0}
# the constructed averaging transformer's flow is a straight line: 4 Euler steps land 60.5–62.9 dB (decoded
# pixels, 8 eval pairs) from its exact target (the detail-mapped latent average), 10 steps 60.8–63.2 dB; 2 steps
# stay within 1 level of 255 of 8 steps (mean 0.02–0.03 on the example IVIF/MFF pairs) at 60 % of 4 steps' time
CONSTRUCTED_STEPS = 2
# ditfuse.json "precision" of a constructed transformer (`devices.resolve_model_dtype`): dtype auto runs it in
# fp32 on every device (on a GPU it would pick bf16, whose rounded weights move the fusion by up to 4 levels)
CONSTRUCTED_PRECISION = {"dtype": "fp32"}

# VAE: f = 4, 16 latent channels (3× compression: room for the ≥ 30 dB PSNR target), channels (32, 64, 64),
# one resnet per level, no mid attention
TINY_VAE = {"f": 4, "latent": 16, "base": 32, "max_ch": 64}

# Training-data mix for the bundled model: mostly the three real fusion tasks and M3.
TINY_MIX = {"m3": 0.28, "ivif": 0.2, "mff": 0.18, "mef": 0.18, "control": 0.08, "seg": 0.08}

# Copy curriculum (experimental, see README "Learning to use the inputs"): half of the samples are
# image 1 == image 2 == target ("copy"), the rest the fusion tasks; used with --align-init at 64-128 px.
COPY_MIX = {"copy": 0.5, "m3": 0.15, "ivif": 0.12, "mff": 0.1, "mef": 0.1, "control": 0.03}

# settings per device kind
GPU = {"vae_batch": 64, "vae_size": 128, "vae_lr": 1e-3, "batch": 32, "sizes": [128, 192, 256, 320, 384],
       "size_probs": [0.1, 0.2, 0.35, 0.2, 0.15], "lr": 8e-4, "ema": 0.999}
CPU = {"vae_batch": 8, "vae_size": 128, "vae_lr": 1e-3, "batch": 4, "sizes": [128, 192, 256],
       "size_probs": [0.3, 0.45, 0.25], "lr": 5e-4, "ema": 0.998}


def instruction_texts() -> list[str]:
    """Every wrapped branch text the bundled model can see in training or with the core's prompts (standard
    prompts, presets, tags, class names, the negative prompt, image-only and ``<cfg>`` branches)."""
    from .. import m3, prompts

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


# spatial-alignment prior (a random initialisation's layer 0, all heads): output token i attends to the
# input-image tokens at its own grid position and adds their (normalised) hidden states to its residual,
# i.e. the model starts as "average the inputs in embedding space" instead of having to discover the
# correspondence. Built only from the weights' layout (same architecture, same file).
ALIGN_FREQS = (0, 6, 12)          # 2D sin-cos pos_embed frequency indices used (ω = 10000^(-k/64): 1, .42, .18)
ALIGN_MARK_IN, ALIGN_MARK_OUT = 63, 191  # pos_embed dims that are ~0 everywhere (sin of the lowest frequency)


def align_attention_init(transformer, strength: float = 8.0, marker: float = 1.0, quiet: bool = False) -> dict:
    """q/k of layer 0 read the pos_embed's sin/cos features (both axes, ALIGN_FREQS) into the lowest-frequency
    RoPE pairs (nearly position-invariant for the offsets between an image and the output), so q_i·k_j peaks
    at the same grid position; a bias marker on input-image tokens (and its query on output tokens) makes
    output tokens prefer the input images over themselves. v and out are the identity. Content (patch
    projections), text and time embeddings are zeroed on the feature dimensions so they do not blur the
    match. ``quiet``: besides, input images share the output patch projection (one embedding space) and the
    residual branches of the other layers (attention out, MLP down projections, layer 0's MLP included)
    start at zero, as DiT zero-initialises its blocks, so the model starts as "layer-0 alignment + linear
    read-out" and the rest grows from there. Returns the dims used."""
    import torch

    if quiet:
        with torch.no_grad():
            pe_ = transformer.patch_embedding
            pe_.input_image_proj.weight.copy_(pe_.output_image_proj.weight)
            pe_.input_image_proj.bias.copy_(pe_.output_image_proj.bias)
            for i, layer in enumerate(transformer.layers):
                layer.mlp.down_proj.weight.zero_()
                if i > 0:
                    layer.self_attn.to_out[0].weight.zero_()

    hidden = transformer.config.hidden_size
    half, quarter = hidden // 2, hidden // 4
    attn = transformer.layers[0].self_attn
    heads = attn.heads
    hd = hidden // heads
    feats = []  # (sin dim, cos dim) per (axis, frequency)
    for axis in (0, half):
        for k in ALIGN_FREQS:
            feats.append((axis + k, axis + quarter + k))
    used = [d for pair in feats for d in pair] + [ALIGN_MARK_IN, ALIGN_MARK_OUT]
    n_pairs = hd // 2
    first = n_pairs - len(feats)  # lowest-frequency RoPE pairs: (d, d + hd/2), d = first..n_pairs-1
    mark = first - 1
    pe = transformer.patch_embedding
    with torch.no_grad():
        for proj in (pe.input_image_proj, pe.output_image_proj):
            proj.weight[used] = 0
            proj.bias[used] = 0
        pe.input_image_proj.bias[ALIGN_MARK_IN] = marker
        pe.output_image_proj.bias[ALIGN_MARK_OUT] = marker
        transformer.embed_tokens.weight[:, used] = 0
        lin = transformer.time_token.linear_2
        lin.weight[used] = 0
        lin.bias[used] = 0
        for w in (attn.to_q.weight, attn.to_k.weight):
            w.mul_(0.1)
        for h in range(heads):
            for p, (ds, dc) in enumerate(feats):
                d = h * hd + first + p
                for w in (attn.to_q.weight, attn.to_k.weight):
                    w[d] = 0
                    w[d + n_pairs] = 0
                    w[d, ds] = strength
                    w[d + n_pairs, dc] = strength
            dm = h * hd + mark
            attn.to_q.weight[dm] = 0
            attn.to_k.weight[dm] = 0
            attn.to_q.weight[dm, ALIGN_MARK_OUT] = strength
            attn.to_k.weight[dm, ALIGN_MARK_IN] = strength
        eye = torch.eye(hidden)
        attn.to_v.weight.copy_(eye[: attn.to_v.weight.shape[0]])
        attn.to_out[0].weight.copy_(eye[:, : attn.to_out[0].weight.shape[1]])
    return {"feature_dims": used, "rope_pairs": list(range(mark, n_pairs))}

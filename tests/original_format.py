"""Write a model in the ORIGINAL OmniGen-v1 layout, spelled out key by key from the published key list
(independent of ditfuse_core.checkpoint, which converts the other way)."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file


def original_state_dict(model) -> dict[str, torch.Tensor]:
    sd = model.state_dict()
    out = {
        "pos_embed": sd["patch_embedding.pos_embed"],
        "x_embedder.proj.weight": sd["patch_embedding.output_image_proj.weight"],
        "x_embedder.proj.bias": sd["patch_embedding.output_image_proj.bias"],
        "input_x_embedder.proj.weight": sd["patch_embedding.input_image_proj.weight"],
        "input_x_embedder.proj.bias": sd["patch_embedding.input_image_proj.bias"],
        "time_token.mlp.0.weight": sd["time_token.linear_1.weight"],
        "time_token.mlp.0.bias": sd["time_token.linear_1.bias"],
        "time_token.mlp.2.weight": sd["time_token.linear_2.weight"],
        "time_token.mlp.2.bias": sd["time_token.linear_2.bias"],
        "t_embedder.mlp.0.weight": sd["t_embedder.linear_1.weight"],
        "t_embedder.mlp.0.bias": sd["t_embedder.linear_1.bias"],
        "t_embedder.mlp.2.weight": sd["t_embedder.linear_2.weight"],
        "t_embedder.mlp.2.bias": sd["t_embedder.linear_2.bias"],
        "final_layer.adaLN_modulation.1.weight": sd["norm_out.linear.weight"],
        "final_layer.adaLN_modulation.1.bias": sd["norm_out.linear.bias"],
        "final_layer.linear.weight": sd["proj_out.weight"],
        "final_layer.linear.bias": sd["proj_out.bias"],
        "llm.embed_tokens.weight": sd["embed_tokens.weight"],
        "llm.norm.weight": sd["norm.weight"],
    }
    for i in range(model.config.num_layers):
        p = f"layers.{i}."
        o = f"llm.layers.{i}."
        out[o + "self_attn.qkv_proj.weight"] = torch.cat(
            [sd[p + "self_attn.to_q.weight"], sd[p + "self_attn.to_k.weight"], sd[p + "self_attn.to_v.weight"]])
        out[o + "self_attn.o_proj.weight"] = sd[p + "self_attn.to_out.0.weight"]
        out[o + "mlp.gate_up_proj.weight"] = sd[p + "mlp.gate_up_proj.weight"]
        out[o + "mlp.down_proj.weight"] = sd[p + "mlp.down_proj.weight"]
        out[o + "input_layernorm.weight"] = sd[p + "input_layernorm.weight"]
        out[o + "post_attention_layernorm.weight"] = sd[p + "post_attention_layernorm.weight"]
    return {k: v.contiguous().clone() for k, v in out.items()}


def phi3_config(model) -> dict:
    c = model.config
    return {
        "architectures": ["Phi3ForCausalLM"], "model_type": "phi3",
        "hidden_size": c.hidden_size, "intermediate_size": c.intermediate_size,
        "num_attention_heads": c.num_attention_heads, "num_key_value_heads": c.num_key_value_heads,
        "num_hidden_layers": c.num_layers, "rms_norm_eps": c.rms_norm_eps, "rope_theta": c.rope_base,
        "rope_scaling": {"type": "su", **c.rope_scaling}, "max_position_embeddings": c.max_position_embeddings,
        "original_max_position_embeddings": c.original_max_position_embeddings, "vocab_size": c.vocab_size,
        "pad_token_id": c.pad_token_id, "pos_embed_max_size": c.pos_embed_max_size,
        "in_channels": c.in_channels, "patch_size": c.patch_size,
    }


def save_original_folder(folder: Path, model, vae, state: dict | None = None) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(state or original_state_dict(model), str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(phi3_config(model)))
    vae.save_pretrained(folder / "vae")
    return folder


def save_both_layouts(root: Path):
    """The tiny model (grouped-query attention) as root/original (Phi-3 layout) and root/diffusers; returns
    (model, vae). The tests that compare the two loaders share it."""
    from ditfuse_core.tiny import save_diffusers_folder, tiny_transformer, tiny_vae

    model, vae = tiny_transformer(seed=11, kv_heads=2), tiny_vae(seed=12)
    save_diffusers_folder(root / "diffusers", model, vae)
    save_original_folder(root / "original", model, vae)
    return model, vae

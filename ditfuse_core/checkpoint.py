"""Load the transformer from an original OmniGen-v1 folder or a diffusers-format folder.

Original folders hold a Phi-3 style `config.json` (which transformers 5.x refuses: rope_scaling
`"type": "su"`), so we read it ourselves, and `model.safetensors` with OmniGen key names, converted to
diffusers names while streaming: tensors are read one at a time, so peak RAM stays ≈ one copy of the weights.
`weights` (weight_storage) converts the block projections to their storage dtype (e.g. fp8) as they are read,
so the full-precision model is never held.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors import safe_open

from . import weight_storage
from .transformer import DiTFuseTransformer

_RENAMES = {
    "pos_embed": "patch_embedding.pos_embed",
    "x_embedder.proj.weight": "patch_embedding.output_image_proj.weight",
    "x_embedder.proj.bias": "patch_embedding.output_image_proj.bias",
    "input_x_embedder.proj.weight": "patch_embedding.input_image_proj.weight",
    "input_x_embedder.proj.bias": "patch_embedding.input_image_proj.bias",
    "final_layer.adaLN_modulation.1.weight": "norm_out.linear.weight",
    "final_layer.adaLN_modulation.1.bias": "norm_out.linear.bias",
    "final_layer.linear.weight": "proj_out.weight",
    "final_layer.linear.bias": "proj_out.bias",
    "llm.embed_tokens.weight": "embed_tokens.weight",
    "llm.norm.weight": "norm.weight",
}
_MLP = {"0": "linear_1", "2": "linear_2"}
_LAYER = re.compile(r"^llm\.layers\.(\d+)\.(.+)$")


def detect_format(folder: str | Path) -> str:
    """'diffusers' (transformer/ sub-folder or a diffusers config) or 'original' (OmniGen-v1 layout)."""
    folder = Path(folder)
    if (folder / "transformer" / "config.json").is_file():
        return "diffusers"
    cfg = folder / "config.json"
    if cfg.is_file():
        data = json.loads(cfg.read_text())
        if data.get("_class_name") in ("OmniGenTransformer2DModel", "DiTFuseTransformer"):
            return "diffusers"
        if (folder / "model.safetensors").is_file():
            return "original"
    raise FileNotFoundError(
        f"{folder} is not a DiTFuse/OmniGen model folder: expected either an original OmniGen-v1 folder "
        "(config.json + model.safetensors + vae/) or a diffusers folder (transformer/ + vae/)"
    )


def model_meta(folder: str | Path) -> dict:
    """The folder's ditfuse.json (sampling defaults, precision needs, training record), or {}."""
    f = Path(folder) / "ditfuse.json"
    return json.loads(f.read_text()) if f.is_file() else {}


def config_from_phi3(cfg: dict) -> dict:
    """OmniGen-v1's Phi-3 config.json → OmniGenTransformer2DModel kwargs."""
    heads = cfg["num_attention_heads"]
    head_dim = cfg["hidden_size"] // heads
    scaling = cfg.get("rope_scaling") or {}
    ones = [1.0] * (head_dim // 2)
    return dict(
        in_channels=cfg.get("in_channels", 4),
        patch_size=cfg.get("patch_size", 2),
        hidden_size=cfg["hidden_size"],
        rms_norm_eps=cfg.get("rms_norm_eps", 1e-5),
        num_attention_heads=heads,
        num_key_value_heads=cfg.get("num_key_value_heads") or heads,
        intermediate_size=cfg["intermediate_size"],
        num_layers=cfg["num_hidden_layers"],
        pad_token_id=cfg.get("pad_token_id", 32000),
        vocab_size=cfg.get("vocab_size", 32064),
        max_position_embeddings=cfg.get("max_position_embeddings", 131072),
        original_max_position_embeddings=cfg.get("original_max_position_embeddings", 4096),
        rope_base=cfg.get("rope_theta", 10000),
        rope_scaling={"short_factor": scaling.get("short_factor", ones), "long_factor": scaling.get("long_factor", ones)},
        pos_embed_max_size=cfg.get("pos_embed_max_size", 192),
    )


def convert_key(key: str, hidden: int):
    """OmniGen key → list of (diffusers key, row slice or None)."""
    if key in _RENAMES:
        return [(_RENAMES[key], None)]
    for emb in ("time_token", "t_embedder"):
        m = re.match(rf"^{emb}\.mlp\.(\d)\.(weight|bias)$", key)
        if m:
            return [(f"{emb}.{_MLP[m.group(1)]}.{m.group(2)}", None)]
    m = _LAYER.match(key)
    if m:
        i, rest = m.groups()
        pre = f"layers.{i}."
        if rest == "self_attn.qkv_proj.weight":
            return [(pre + "self_attn.to_q.weight", slice(0, hidden)),
                    (pre + "self_attn.to_k.weight", "k"),
                    (pre + "self_attn.to_v.weight", "v")]
        if rest == "self_attn.o_proj.weight":
            return [(pre + "self_attn.to_out.0.weight", None)]
        return [(pre + rest, None)]
    raise KeyError(f"unexpected key in OmniGen checkpoint: {key}")


def load_original(folder: str | Path, dtype: torch.dtype = torch.float32, device="cpu",
                  weights: str | torch.dtype | None = "auto") -> DiTFuseTransformer:
    """weights: storage dtype of the block projections ("auto": dtype; "fp8": e4m3fn, upcast at the matmul)."""
    folder = Path(folder)
    kwargs = config_from_phi3(json.loads((folder / "config.json").read_text()))
    hidden = kwargs["hidden_size"]
    head_dim = hidden // kwargs["num_attention_heads"]
    kv_dim = kwargs["num_key_value_heads"] * head_dim
    storage = weight_storage.storage_dtype(weights, dtype)
    with torch.device("meta"):
        model = DiTFuseTransformer(**kwargs)
    weight_storage.prepare(model, storage, dtype)
    scratch = weight_storage.new_scratch() if storage == weight_storage.FP8 else None
    state = {}
    with safe_open(str(folder / "model.safetensors"), framework="pt", device="cpu") as f:
        for key in f.keys():
            tensor = f.get_tensor(key)
            for name, rows in convert_key(key, hidden):
                part = tensor
                if rows == "k":
                    part = tensor[hidden : hidden + kv_dim]
                elif rows == "v":
                    part = tensor[hidden + kv_dim :]
                elif rows is not None:
                    part = tensor[rows]
                state.update(weight_storage.convert(name, part, storage, dtype, scratch))
            del tensor, part
    model.load_state_dict(state, strict=True, assign=True)
    _materialise_buffers(model)
    return model.to(device).eval()


def _materialise_buffers(model: DiTFuseTransformer) -> None:
    """Non-persistent buffers are not in checkpoints; rebuild those left on the meta device."""
    rope = model.rope
    if rope.inv_freq.is_meta:
        dim = rope.dim
        rope.inv_freq = 1.0 / (rope.base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    left = [n for n, t in list(model.named_parameters()) + list(model.named_buffers()) if t.is_meta]
    if left:
        raise RuntimeError(f"checkpoint did not provide: {left[:5]}")


def load_diffusers(folder: str | Path, dtype: torch.dtype, device="cpu", weights=None) -> DiTFuseTransformer:
    """A diffusers transformer folder, its stored layers converted tensor by tensor as read (weights ≠ dtype);
    weights "auto" is diffusers' own from_pretrained."""
    storage = weight_storage.storage_dtype(weights, dtype)
    if storage == dtype:
        return DiTFuseTransformer.from_pretrained(str(folder), torch_dtype=dtype).to(device).eval()
    folder = Path(folder)
    with torch.device("meta"):
        model = DiTFuseTransformer.from_config(DiTFuseTransformer.load_config(str(folder)))
    weight_storage.prepare(model, storage, dtype)
    index = folder / "diffusion_pytorch_model.safetensors.index.json"
    files = (sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.is_file()
             else ["diffusion_pytorch_model.safetensors"])
    scratch = weight_storage.new_scratch() if storage == weight_storage.FP8 else None
    state = {}
    for name in files:
        with safe_open(str(folder / name), framework="pt", device="cpu") as f:
            for key in f.keys():
                state.update(weight_storage.convert(key, f.get_tensor(key), storage, dtype, scratch))
    model.load_state_dict(state, strict=True, assign=True)
    _materialise_buffers(model)
    return model.to(device).eval()


def load_transformer(folder: str | Path, dtype: torch.dtype = torch.float32, device="cpu",
                     weights: str | torch.dtype | None = "auto") -> DiTFuseTransformer:
    folder = Path(folder)
    if detect_format(folder) == "original":
        return load_original(folder, dtype, device, weights)
    sub = folder / "transformer" if (folder / "transformer").is_dir() else folder
    return load_diffusers(sub, dtype, device, weights)


def vae_folder(folder: str | Path) -> Path:
    vae = Path(folder) / "vae"
    if not (vae / "config.json").is_file():
        raise FileNotFoundError(f"no VAE in {folder}: expected {vae}/config.json and its weights")
    return vae

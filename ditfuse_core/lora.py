"""The DiTFuse LoRA on diffusers' module names, with adjustable strength and exact merge/unmerge.

The published adapter targets OmniGen's fused `qkv_proj` and `o_proj`. diffusers splits qkv into to_q/to_k/
to_v: a LoRA on the fused projection is ΔW = B·A with B [3d, r]; splitting B's rows into three blocks that
share A gives exactly the same ΔW per projection. `o_proj` becomes `to_out.0`.

On an fp8 base (weight_storage) the adapter stays in the compute dtype and unmerged: folding ΔW into fp8 weights
would round most of it away, so `merge` refuses there.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import torch
from peft import LoraConfig
from peft.tuners.lora import LoraLayer
from peft.utils import set_peft_model_state_dict
from safetensors.torch import load_file, save_file

from .weight_storage import FP8

ADAPTER = "ditfuse"
_ORIG = re.compile(r"(?:base_model\.model\.)?(?:llm\.)?layers\.(\d+)\.self_attn\.(qkv_proj|o_proj)\.(lora_[AB])(?:\.default)?\.weight$")
_DIFF = re.compile(r"(?:transformer\.)?(layers\.\d+\.self_attn\.(?:to_q|to_k|to_v|to_out\.0))\.(lora_[AB])(?:\.\w+)?\.weight$")


def _read(path: Path):
    path = Path(path)
    if path.is_dir():
        files = sorted(path.glob("*.safetensors"))
        if not files:
            raise FileNotFoundError(f"no .safetensors adapter in {path}")
        weights = load_file(str(files[0]))
        cfg_file = path / "adapter_config.json"
        cfg = json.loads(cfg_file.read_text()) if cfg_file.is_file() else {}
    else:
        weights = load_file(str(path))
        cfg_file = path.with_name("adapter_config.json")
        cfg = json.loads(cfg_file.read_text()) if cfg_file.is_file() else {}
    return weights, cfg


def to_diffusers_naming(weights: dict[str, torch.Tensor], kv_dim: int | None = None) -> dict[str, torch.Tensor]:
    """DiTFuse/OmniGen adapter keys → `layers.i.self_attn.to_q.lora_A.weight` … (peft, no adapter name).
    Keys already in diffusers naming pass through."""
    out = {}
    for key, t in weights.items():
        m = _ORIG.search(key)
        if m:
            i, proj, ab = m.groups()
            pre = f"layers.{i}.self_attn."
            if proj == "o_proj":
                out[f"{pre}to_out.0.{ab}.weight"] = t
            elif ab == "lora_A":
                for name in ("to_q", "to_k", "to_v"):
                    out[f"{pre}{name}.lora_A.weight"] = t
            else:
                q_dim = t.shape[0] - 2 * (kv_dim or t.shape[0] // 3)
                kv = (t.shape[0] - q_dim) // 2
                out[f"{pre}to_q.lora_B.weight"] = t[:q_dim].contiguous()
                out[f"{pre}to_k.lora_B.weight"] = t[q_dim : q_dim + kv].contiguous()
                out[f"{pre}to_v.lora_B.weight"] = t[q_dim + kv :].contiguous()
            continue
        m = _DIFF.search(key)
        if m:
            out[f"{m.group(1)}.{m.group(2)}.weight"] = t
            continue
        raise KeyError(f"unrecognised LoRA key {key!r}")
    return out


def load_lora(model, path: str | Path, strength: float = 1.0, adapter_name: str = ADAPTER) -> str:
    """Attach an adapter (DiTFuse or diffusers naming) to the transformer; returns its name."""
    _check_strength(strength)
    weights, cfg = _read(Path(path))
    kv_dim = model.config.num_key_value_heads * (model.config.hidden_size // model.config.num_attention_heads)
    state = to_diffusers_naming(weights, kv_dim)
    rank = next(t.shape[0] for k, t in state.items() if k.endswith("lora_A.weight"))
    r = int(cfg.get("r", rank))
    alpha = cfg.get("lora_alpha", r)
    targets = sorted({k.split(".lora_")[0].split("self_attn.")[1] for k in state})
    config = LoraConfig(r=r, lora_alpha=alpha, target_modules=targets, init_lora_weights=False)
    model.add_adapter(config, adapter_name=adapter_name)
    result = set_peft_model_state_dict(model, state, adapter_name=adapter_name)
    unexpected = getattr(result, "unexpected_keys", None)
    if unexpected:
        raise KeyError(f"adapter keys not used by the model: {unexpected[:5]}")
    missing = [k for k in getattr(result, "missing_keys", []) if adapter_name in k and "lora_" in k]
    if missing:
        raise KeyError(f"adapter is missing weights for: {missing[:5]}")
    set_strength(model, strength, adapter_name)
    return adapter_name


def lora_layers(model):
    return [m for m in model.modules() if isinstance(m, LoraLayer)]


def set_strength(model, strength: float, adapter_name: str = ADAPTER) -> None:
    """Scale ΔW to strength·(alpha/r)·B·A without reloading (not while merged)."""
    _check_strength(strength)
    for m in lora_layers(model):
        if adapter_name in m.scaling:
            if m.merged:
                raise RuntimeError("unmerge the LoRA before changing its strength")
            m.set_scale(adapter_name, strength)


def merge(model, adapter_name: str = ADAPTER) -> None:
    """Fold ΔW into the base weights, keeping a copy of the originals so `unmerge` restores them bit-exactly
    (peft's own unmerge subtracts ΔW again, which is not exact in floating point)."""
    if any(adapter_name in m.scaling and m.base_layer.weight.dtype == FP8 for m in lora_layers(model)):
        raise RuntimeError("the LoRA cannot be merged into fp8 weights (it would be mostly rounded away); it "
                           "stays unmerged and exact on top of them: load with weights bf16/fp16/fp32 to merge")
    for m in lora_layers(model):
        if adapter_name in m.scaling and not m.merged:
            m._ditfuse_backup = m.base_layer.weight.detach().to("cpu", copy=True)
            m.merge(adapter_names=[adapter_name])


def unmerge(model) -> None:
    for m in lora_layers(model):
        if m.merged:
            m.unmerge()
            backup = getattr(m, "_ditfuse_backup", None)
            if backup is not None:
                with torch.no_grad():
                    m.base_layer.weight.copy_(backup)
                del m._ditfuse_backup


def save_lora(model, folder: str | Path, adapter_name: str = ADAPTER) -> Path:
    """Write the adapter in diffusers naming (`transformer.layers.i.self_attn.to_q.lora_A.weight`) with a
    peft adapter_config.json."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {}
    layer = None
    for name, m in model.named_modules():
        if isinstance(m, LoraLayer) and adapter_name in m.lora_A:
            layer = m
            state[f"transformer.{name}.lora_A.weight"] = m.lora_A[adapter_name].weight.detach().cpu().contiguous()
            state[f"transformer.{name}.lora_B.weight"] = m.lora_B[adapter_name].weight.detach().cpu().contiguous()
    if layer is None:
        raise ValueError(f"no adapter {adapter_name!r} on this model")
    save_file(state, str(folder / "adapter_model.safetensors"))
    cfg = {"peft_type": "LORA", "r": layer.r[adapter_name], "lora_alpha": layer.lora_alpha[adapter_name],
           "target_modules": sorted({k.split("self_attn.")[1].rsplit(".lora_", 1)[0] for k in state})}
    (folder / "adapter_config.json").write_text(json.dumps(cfg, indent=2))
    return folder


def _check_strength(strength: float) -> None:
    if not math.isfinite(float(strength)):
        raise ValueError(f"LoRA strength must be a finite number, got {strength}")

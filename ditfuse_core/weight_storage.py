"""Storage dtype of the transformer's big Linear weights ("weights"), apart from the compute dtype ("dtype").

Why: the blocks' projections (attention to_q/to_k/to_v/to_out.0, MLP gate_up_proj/down_proj) hold ~97 % of
OmniGen-v1's 3.8 B parameters. Stored in fp8 (float8_e4m3fn) they take half of bf16's memory; each is upcast to
the compute dtype at its matmul, as ComfyUI's fp8 weight modes do, so the arithmetic stays in `dtype`. Token,
patch and time embeddings, norms, norm_out and proj_out are small and sensitive: they stay in the compute dtype.

fp8 weights carry a per-tensor scale, the power of two nearest above amax/448: division by it is exact, the
upcast (fp8 value × 2^k) is exact in fp32/bf16/fp16, and weights of small magnitude stay out of fp8's
subnormals (measured in benchmarks/README.md, "Weight storage").
"""
from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F
from torch import nn

from .devices import DTYPES

WEIGHTS = ("auto", "fp32", "bf16", "fp16", "fp8")
FP8 = torch.float8_e4m3fn
FP8_MAX = 448.0
_STORED = re.compile(r"^layers\.\d+\.(?:self_attn\.(?:to_q|to_k|to_v|to_out\.0)|mlp\.(?:gate_up_proj|down_proj))$")


def storage_dtype(weights: str | torch.dtype | None, compute: torch.dtype) -> torch.dtype:
    """The storage dtype of the stored layers: "auto" (or None) is the compute dtype (no conversion)."""
    if isinstance(weights, torch.dtype):
        return weights
    if weights is None or weights == "auto":
        return compute
    if weights == "fp8":
        return FP8
    try:
        return DTYPES[str(weights).lower()]
    except KeyError:
        raise ValueError(f"unknown weights {weights!r}; choose one of {', '.join(WEIGHTS)}") from None


def is_stored(module_name: str) -> bool:
    """True for the block projections whose weights take the storage dtype."""
    return bool(_STORED.match(module_name))


class StoredLinear(nn.Linear):
    """nn.Linear whose weight is kept in a storage dtype and upcast to the input's dtype at the matmul.

    A subclass of nn.Linear, so peft wraps it like any Linear; `compute_dtype` is the dtype peft gives the LoRA
    (as for bitsandbytes layers), so an adapter on an fp8 base stays in the compute dtype, unmerged."""

    def __init__(self, in_features: int, out_features: int, bias: bool, compute_dtype: torch.dtype,
                 storage: torch.dtype, device=None):
        super().__init__(in_features, out_features, bias, device=device, dtype=compute_dtype)
        self.compute_dtype = compute_dtype
        self.weight.requires_grad_(False)
        self.register_buffer("weight_scale", torch.ones((), device=device) if storage == FP8 else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.dequantised(x.dtype), None if self.bias is None else self.bias.to(x.dtype))

    def dequantised(self, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The weight as the matmul sees it, in `dtype` (default: the compute dtype)."""
        w = self.weight.to(dtype or self.compute_dtype)
        return w if self.weight_scale is None else w * self.weight_scale.to(w.dtype)


def quantise_fp8(w: torch.Tensor, scratch: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(fp8 tensor, fp32 scale) with w ≈ fp8 × scale; scale = 2^ceil(log2(amax / 448)). Converts through
    `scratch` (fp32, see `new_scratch`) a chunk at a time: whole-tensor temporaries, or a buffer allocated per
    tensor, left freed holes in the heap that kept RssAnon at up to 1.7× the fp8 model after a load."""
    w = w.detach()
    if scratch is None:
        scratch = new_scratch(w.device)
    lo, hi = torch.aminmax(w) if w.numel() else (torch.zeros(()), torch.zeros(()))
    amax = max(-float(lo), float(hi))
    scale = 2.0 ** math.ceil(math.log2(amax / FP8_MAX)) if amax > 0 else 1.0
    q = torch.empty(w.shape, dtype=FP8, device=w.device)
    src, dst, chunk = w.reshape(-1), q.view(-1), scratch.numel()
    for a in range(0, src.numel(), chunk):
        n = min(chunk, src.numel() - a)
        torch.mul(src[a : a + n], 1.0 / scale, out=scratch[:n])  # exact: a power of two
        dst[a : a + n].copy_(scratch[:n])
    return q, torch.tensor(scale, dtype=torch.float32)


def new_scratch(device="cpu", elements: int = 1 << 20) -> torch.Tensor:
    """The fp32 buffer fp8 conversion goes through; one per load, reused for every tensor."""
    return torch.empty(elements, dtype=torch.float32, device=device)


def prepare(model: nn.Module, storage: torch.dtype, compute: torch.dtype) -> None:
    """Swap the stored layers of a model built on the meta device (before its weights are assigned) for
    StoredLinear. Nothing changes when storage is the compute dtype."""
    if storage == compute:
        return
    for name, mod in list(model.named_modules()):
        if is_stored(name) and type(mod) is nn.Linear:
            parent, _, child = name.rpartition(".")
            new = StoredLinear(mod.in_features, mod.out_features, mod.bias is not None, compute, storage,
                               device="meta")
            setattr(model.get_submodule(parent), child, new)


def convert(key: str, tensor: torch.Tensor, storage: torch.dtype, compute: torch.dtype,
            scratch: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """One checkpoint tensor (diffusers name) → the state-dict entries it becomes: a stored layer's weight in
    the storage dtype (and its fp8 scale), anything else in the compute dtype."""
    module, _, leaf = key.rpartition(".")
    if storage == compute or leaf != "weight" or not is_stored(module):
        return {key: tensor.to(compute).contiguous()}
    if storage == FP8:
        q, scale = quantise_fp8(tensor, scratch)
        return {key: q.contiguous(), f"{module}.weight_scale": scale}
    return {key: tensor.to(storage).contiguous()}


def convert_model(model: nn.Module, weights: str | torch.dtype | None) -> nn.Module:
    """Convert a loaded model's stored layers in place (one layer at a time); compute dtype = the model's."""
    compute = model.dtype
    storage = storage_dtype(weights, compute)
    if storage == compute:
        return model
    scratch = new_scratch(model.device) if storage == FP8 else None
    for name, mod in list(model.named_modules()):
        if is_stored(name) and type(mod) is nn.Linear:
            new = StoredLinear(mod.in_features, mod.out_features, mod.bias is not None, compute, storage,
                               device="meta")
            state = convert(f"{name}.weight", mod.weight.detach(), storage, compute, scratch)
            state = {k.rpartition(".")[2]: v.to(mod.weight.device) for k, v in state.items()}
            if mod.bias is not None:
                state["bias"] = mod.bias.detach()
            new.load_state_dict(state, strict=True, assign=True)
            new.weight.requires_grad_(False)
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent), child, new)
    return model


def stored_bytes(model: nn.Module) -> dict[str, int]:
    """Bytes of the stored layers' weights (with their scales) and of the whole transformer (state dict, as
    ComfyUI's memory manager counts a model)."""
    sd = model.state_dict()
    stored = sum(t.nelement() * t.element_size() for k, t in sd.items()
                 if k.endswith((".weight", ".weight_scale")) and is_stored(_module_of(k)))
    return {"stored": stored, "total": sum(t.nelement() * t.element_size() for t in sd.values())}


def _module_of(key: str) -> str:
    """`layers.0.self_attn.to_q.base_layer.weight` → `layers.0.self_attn.to_q` (peft-wrapped or not)."""
    module = key.rpartition(".")[0]
    return module[: -len(".base_layer")] if module.endswith(".base_layer") else module

"""Growing a built transformer in place of the bundled model's pieces (`control`, `selection`, `exposure`,
`neighbourhood`, `focus_energy`): more MLP units, one more layer; every existing weight kept exactly and every new
one zero (a zero layer is an identity: its residual branches add nothing)."""
from __future__ import annotations

import torch

from .average_init import HIDDEN


def widen_mlps(model, extra: int) -> int:
    """Give every layer's MLP ``extra`` more (zero) units (one intermediate size for all layers); returns the
    index of the first new unit."""
    old = model.config.intermediate_size
    new = old + extra
    for blk in model.layers:
        mlp = blk.mlp
        gu = torch.nn.Linear(HIDDEN, 2 * new, bias=False, dtype=mlp.gate_up_proj.weight.dtype)
        dn = torch.nn.Linear(new, HIDDEN, bias=False, dtype=mlp.down_proj.weight.dtype)
        gu.weight.zero_()
        dn.weight.zero_()
        gu.weight[:old], gu.weight[new:new + old] = mlp.gate_up_proj.weight[:old], mlp.gate_up_proj.weight[old:]
        dn.weight[:, :old] = mlp.down_proj.weight
        mlp.gate_up_proj, mlp.down_proj = gu, dn
    model.register_to_config(intermediate_size=new)
    return old


def insert_layer(model, at: int):
    """A new transformer: ``model`` with a zero layer (an identity) inserted at index ``at``."""
    from ditfuse_core.transformer import DiTFuseTransformer

    cfg = {k: v for k, v in dict(model.config).items() if not k.startswith("_")}
    cfg["num_layers"] += 1
    new = DiTFuseTransformer(**cfg)
    state = {}
    for k, v in model.state_dict().items():
        if k.startswith("layers."):
            i, rest = k.split(".", 2)[1:]
            k = f"layers.{int(i) + (int(i) >= at)}.{rest}"
        state[k] = v
    for k, v in new.state_dict().items():
        if k.startswith(f"layers.{at}."):
            state[k] = torch.ones_like(v) if k.endswith("layernorm.weight") else torch.zeros_like(v)
    new.load_state_dict(state)
    return new.to(torch.float32)

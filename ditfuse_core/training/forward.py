"""The batched, padded training forward: the same math as DiTFuseTransformer.forward_branch, rows left-padded
to a common condition length so one call trains on samples with different instructions and images."""
from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint as grad_checkpoint

from ..sequence import Branch
from ..transformer import run_block


def _block(block, h, cos, sin, mask):
    """One OmniGen block exactly as the inference path runs it (no cache)."""
    return run_block(block, h, cos, sin, mask)[0]


def forward_batch(model, latents: torch.Tensor, t: torch.Tensor, branches: list[Branch],
                  image_latents: list[list[torch.Tensor]], checkpointing: bool = False) -> torch.Tensor:
    """Velocity for a batch whose rows have different conditions. Rows are left-padded to a common
    condition length; each row keeps its own positions (0..L_i+N) and its own mask, so a row's output
    equals ``model.forward_branch`` on that row alone. Masks and positions are built on the device."""
    bsz, _, height, width = latents.shape
    dev = latents.device
    x = model.embed_patches(latents, is_input_image=False)
    n = x.shape[1]
    time_tok, temb = model.embed_time(t)
    lens = torch.tensor([br.length for br in branches])
    lmax = int(lens.max())
    pads = lmax - lens
    total = lmax + 1 + n
    ids = torch.full((bsz, lmax), model.config.pad_token_id, dtype=torch.long)
    for b, br in enumerate(branches):
        ids[b, int(pads[b]):] = br.input_ids
    cond = model.embed_tokens(ids.to(dev))
    # input images: one patch-embedding call per distinct latent shape
    spans = [(b, int(pads[b]) + s, int(pads[b]) + e, lat[k]) for b, (br, lat) in enumerate(zip(branches, image_latents))
             for (s, e), k in zip(br.image_spans, br.image_order)]
    if spans:
        cond = cond.clone()
        by_shape: dict = {}
        for i, sp in enumerate(spans):
            by_shape.setdefault(tuple(sp[3].shape[-3:]), []).append(i)
        for idxs in by_shape.values():
            lat = torch.cat([spans[i][3] for i in idxs]).to(dev)
            tok = model.embed_patches(lat, is_input_image=True).to(cond.dtype)
            for j, i in enumerate(idxs):
                b, s0, e0, _ = spans[i]
                if e0 - s0 != tok.shape[1]:
                    raise ValueError(f"placeholder of {e0 - s0} tokens for an image with {tok.shape[1]}")
                cond[b, s0:e0] = tok[j]
    h = torch.cat([cond, time_tok.to(cond.dtype), x.to(cond.dtype)], dim=1)
    # masks: causal condition (+ full inside each image), time token sees condition + itself,
    # output tokens see everything that is not padding, padding rows see themselves only
    ar = torch.arange(total, device=dev)
    P = pads.to(dev)[:, None, None]
    C = (pads + lens).to(dev)[:, None, None]
    q, k = ar[None, :, None], ar[None, None, :]
    in_q, in_k = (q >= P) & (q < C), (k >= P) & (k < C)
    mask = in_q & in_k & (k <= q)
    mask |= (q == C) & (k >= P) & (k <= C)
    mask |= (q > C) & (k >= P)
    mask |= (q < P) & (k == q)
    n_sp = max((len(br.image_spans) for br in branches), default=0)
    if n_sp:
        ss = torch.full((bsz, n_sp), -1, dtype=torch.long)
        ee = torch.full((bsz, n_sp), -1, dtype=torch.long)
        for b, br in enumerate(branches):
            for j, (s0, e0) in enumerate(br.image_spans):
                ss[b, j], ee[b, j] = s0 + int(pads[b]), e0 + int(pads[b])
        ss, ee = ss.to(dev), ee.to(dev)
        for j in range(n_sp):
            s_, e_ = ss[:, j, None, None], ee[:, j, None, None]
            mask |= (q >= s_) & (q < e_) & (k >= s_) & (k < e_)
    pos = (ar[None, :] - pads.to(dev)[:, None]).clamp_min(0)
    cos, sin = model.rope_cos_sin(pos, [int(ln) + 1 + n for ln in lens])
    for block in model.layers:
        if checkpointing and torch.is_grad_enabled():
            h = grad_checkpoint(_block, block, h, cos, sin, mask, use_reentrant=False)
        else:
            h = _block(block, h, cos, sin, mask)
    return model.read_out(h, temb, n, height, width)


class TrainForward(torch.nn.Module):
    """What accelerate wraps (DDP needs its forward to be called): the batched training forward."""

    def __init__(self, transformer, checkpointing: bool = False):
        super().__init__()
        self.transformer = transformer
        self.checkpointing = checkpointing

    def forward(self, latents, t, branches, image_latents):
        return forward_batch(self.transformer, latents, t, branches, image_latents, self.checkpointing)

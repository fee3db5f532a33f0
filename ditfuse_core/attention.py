"""Attention as the engine runs it: over the condition tokens' image blocks without a materialised mask, against
a KV cache row by row, in chunks of query rows that honour Cancel, and only over the heads and head dims that add
something."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import cancel
from .kv_cache import KVCache

# Attention is split into chunks of query rows so that Cancel (`cancel.check()` between chunks) is honoured within
# a layer: one layer of the bundled model at 2048 px is 6-15 s of attention on a 2-core CPU. A chunk is at most
# CHUNK_WORK (query rows × keys × heads × head dim; 2**33 is ~0.3 s there, unloaded); accelerators split only
# attentions far larger than OmniGen's at 1024 px. Rows attend independently: the result is unchanged
# (bit-identical on CPU). Chunks are multiples of 256 rows, and at least 768: PyTorch's CPU flash attention uses
# 256-row query blocks only from 768 rows up and runs ~20 % slower on smaller calls.
CHUNK_WORK = {"cpu": 2**33}
CHUNK_WORK_ACCELERATOR = 2**40
CHUNK_ROWS, MIN_CHUNK_ROWS = 256, 768


@dataclass
class ConditionMask:
    """The condition tokens' mask (`sequence.condition_mask`: causal, each image span sees itself whole),
    never materialised: a query in an image span [s, e) sees keys [0, e), no mask needed; text queries
    see the keys up to themselves. A [L, L] bool mask at 1024 px is 67 M entries, and SDPA is much slower
    under it than over unmasked image blocks."""

    spans: list[tuple[int, int]]
    length: int


@dataclass(frozen=True)
class HeadGroup:
    """Heads attended together over `width` of their dims. qk [1, G, 1, width]: per head the dims whose q·k terms
    can be non-zero (both rotate-half partners zero in q or in k gives a zero term after RoPE too); v [1, G, 1,
    width]: the value dims that reach the output. Both are filled up with other dims, whose terms are exactly zero
    (qk) or whose outputs to_out ignores (v). None: the whole head."""

    members: torch.Tensor  # positions among the heads that are computed (`HeadPlan.heads`, or all)
    width: int
    qk: torch.Tensor | None
    v: torch.Tensor | None


@dataclass(frozen=True)
class HeadPlan:
    """Which heads an attention module computes, and over which of their dims. heads: those whose value or output
    weights are not all zero (None: all); groups: None = every computed head whole."""

    heads: torch.Tensor | None = None
    groups: tuple[HeadGroup, ...] | None = None


FULL = HeadPlan()
NARROW = 16  # CPU flash attention runs fastest at head dims that are multiples of 16 (16: 0.37×, 32: 0.57× of 64)


def head_plan(attn, hd: int) -> HeadPlan:
    """A head with zero values or zero output columns adds exactly nothing, so its attention is skipped; a head
    whose logits or values use few of its dims is attended over those only (scale kept at hd^-½). Both are exact
    (constructed models have such heads and dims, trained ones do not: FULL). Remembered per module until its
    weights change (tensor versions and storage): no scan and no device sync per layer and step. Plain linear
    projections without bias and without grouped-query attention only (LoRA, fp8 storage: FULL)."""
    proj = (attn.to_q, attn.to_k, attn.to_v, attn.to_out[0])
    plain = all(type(m) is torch.nn.Linear for m in proj) and all(m.bias is None for m in proj[:3])
    if not plain or any(m.weight.shape[0] != attn.heads * hd for m in proj[:3]):
        return FULL
    try:
        key = tuple((m.weight._version, m.weight.data_ptr(), m.weight.device) for m in proj)
    except RuntimeError:  # inference tensors (weights made under torch.inference_mode, as in ComfyUI) keep no
        key = None        # version counter: a change cannot be seen, so look each time
    memo = attn.__dict__.get("_ditfuse_head_plan")
    if key is None or memo is None or memo[0] != key:
        memo = (key, _plan(*(m.weight for m in proj), attn.heads, hd))
        attn.__dict__["_ditfuse_head_plan"] = memo
    return memo[1]


def _plan(wq, wk, wv, wo, heads: int, hd: int) -> HeadPlan:
    def rows(w):  # [H, hd]: the rows of each head that are not all zero
        return w.view(heads, hd, -1).ne(0).any(2)

    def paired(m):  # rotate-half RoPE mixes dim i with i ± hd/2
        return m | m.roll(hd // 2, 1)

    q, k, v, o = torch.stack([rows(wq), rows(wk), rows(wv), wo.view(wo.shape[0], heads, hd).ne(0).any(0)]).cpu()
    qk = paired(q) & paired(k)
    v = v & o
    used = v.any(1)
    active = used.nonzero().flatten()
    sub = None if bool(used.all()) else active
    need = torch.maximum(qk.sum(1), v.sum(1)).clamp(min=1)  # dims a head cannot do without
    widths = ((need + NARROW - 1) // NARROW * NARROW).clamp(max=hd)[active].tolist()
    if all(w == hd for w in widths):
        return HeadPlan(sub, None)
    device = wq.device

    def dims(m, width):  # the used dims first, then unused ones up to width
        return torch.cat([m.nonzero().flatten(), (~m).nonzero().flatten()])[:width]

    groups = []
    for width in sorted(set(widths)):
        pos = [i for i, w in enumerate(widths) if w == width]
        hs = active[pos].tolist()
        idx = None if width == hd else [torch.stack([dims(m[h], width) for h in hs])[None, :, None].to(device)
                                        for m in (qk, v)]
        groups.append(HeadGroup(torch.tensor(pos, device=device), width, *(idx or (None, None))))
    return HeadPlan(sub, tuple(groups))


def _grouped(q, k, v, groups: tuple[HeadGroup, ...] | None, attend) -> torch.Tensor:
    """attend(q, k, v, scale) → [B, Lq, H, d] for each group of heads over its dims; [B, Lq, H, hd] in all."""
    if groups is None:
        return attend(q, k, v, None)
    bsz, heads, lq, hd = q.shape
    scale = hd ** -0.5
    out = q.new_zeros(bsz, lq, heads, v.shape[-1])
    for g in groups:
        qg, kg, vg = q[:, g.members], k[:, g.members], v[:, g.members]
        if g.qk is not None:
            qg = qg.gather(-1, g.qk.expand(bsz, -1, lq, -1))
            kg = kg.gather(-1, g.qk.expand(bsz, -1, kg.shape[2], -1))
            vg = vg.gather(-1, g.v.expand(bsz, -1, vg.shape[2], -1))
        og = attend(qg, kg, vg, scale)
        if g.v is not None:
            og = og.new_zeros(bsz, lq, len(g.members), hd).scatter_(-1, g.v.transpose(1, 2).expand_as(og), og)
        out.index_copy_(2, g.members, og)
    return out


def _repeat_kv(x: torch.Tensor, heads: int) -> torch.Tensor:
    """Grouped-query attention: repeat each key/value head for its query heads (OmniGen-v1 has none)."""
    return x if x.shape[1] == heads else x.repeat_interleave(heads // x.shape[1], dim=1)


def _cached_attention(q, k, v, cache: KVCache, layer: int, plan: HeadPlan = FULL) -> torch.Tensor:
    """Row b's queries against cache row b ‖ row b's new keys, one row at a time (rows have their own
    lengths: no padding, no mask): the first new token (the time token) sees the cache and itself, the others
    everything. q holds the heads of `plan` (`head_plan`); k, v and the cache all heads. Returns [B, Lq, H, hd]."""
    bsz, n_heads, lq, hd = q.shape
    out = q.new_empty(bsz, lq, n_heads, v.shape[-1])

    def attend(qb, kb, vb, scale):
        tk = kb.shape[2] - lq + 1
        return torch.cat([_sdpa(qb[:, :, :1], kb[:, :, :tk], vb[:, :, :tk], scale=scale),
                          _sdpa(qb[:, :, 1:], kb, vb, scale=scale)], 2).transpose(1, 2)

    for b in range(bsz):
        kb, vb = cache.join(layer, b, k[b : b + 1], v[b : b + 1])
        if plan.heads is not None:
            kb, vb = kb[:, plan.heads], vb[:, plan.heads]
        kb, vb = _repeat_kv(kb, n_heads), _repeat_kv(vb, n_heads)
        out[b : b + 1] = _grouped(q[b : b + 1], kb, vb, plan.groups, attend)
    return out


def _attention(q, k, v, mask: torch.Tensor | ConditionMask, groups: tuple[HeadGroup, ...] | None = None
               ) -> torch.Tensor:
    """SDPA under a [B, Lq, Lk] bool mask or a ConditionMask (block by block), by `groups` of heads over their
    dims (`HeadPlan.groups`; None: whole heads); [B, Lq, H, hd]."""
    if isinstance(mask, ConditionMask):
        return _grouped(q, k, v, groups, lambda q, k, v, scale: _condition_attention(q, k, v, mask, scale))
    return _grouped(q, k, v, groups, lambda q, k, v, scale: _sdpa(q, k, v, mask[:, None], scale).transpose(1, 2))


def _condition_attention(q, k, v, mask: ConditionMask, scale: float | None = None) -> torch.Tensor:
    """Condition tokens' attention by blocks: each image span against all keys up to its end (unmasked),
    each run of text between them causal against the keys up to its end. Returns [B, L, H, hd]."""
    blocks, start = [], 0
    for s, e in mask.spans:
        if s > start:
            blocks.append((start, s, True))
        blocks.append((s, e, False))
        start = e
    if start < mask.length:
        blocks.append((start, mask.length, True))
    bsz, heads, lq, _ = q.shape
    out = q.new_empty(bsz, lq, heads, v.shape[-1])
    for a, b, causal in blocks:
        m = None
        if causal:  # row i (position a + i) sees keys j ≤ a + i
            m = torch.arange(b, device=q.device)[None, :] <= torch.arange(a, b, device=q.device)[:, None]
        out[:, a:b] = _sdpa(q[:, :, a:b], k[:, :, :b], v[:, :, :b], m, scale).transpose(1, 2)
    return out


def _sdpa(q, k, v, mask: torch.Tensor | None = None, scale: float | None = None) -> torch.Tensor:
    """SDPA over chunks of query rows (at most CHUNK_WORK each), with `cancel.check()` before each chunk.
    mask broadcasts against [B, H, Lq, Lk]; a mask with a query dimension is cut with the rows. scale: of the
    logits (None: SDPA's 1/√(q's dim); heads narrowed by `_grouped` keep their whole dim's)."""
    bsz, heads, lq, hd = q.shape
    work = CHUNK_WORK.get(q.device.type, CHUNK_WORK_ACCELERATOR)
    rows = max(MIN_CHUNK_ROWS, work // (bsz * heads * k.shape[2] * hd) // CHUNK_ROWS * CHUNK_ROWS)
    if rows >= lq:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    per_row = mask is not None and mask.shape[-2] != 1
    out = q.new_empty(bsz, lq, heads, v.shape[-1]).transpose(1, 2)  # SDPA's own layout: callers transpose back
    for a in range(0, lq, rows):
        cancel.check()
        m = mask[..., a : a + rows, :] if per_row else mask
        out[:, :, a : a + rows] = F.scaled_dot_product_attention(q[:, :, a : a + rows], k, v, attn_mask=m,
                                                                   scale=scale)
    return out

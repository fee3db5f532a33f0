"""Attention as the engine runs it: over the condition tokens' image blocks without a materialised mask, against
a KV cache row by row, in chunks of query rows that honour Cancel, and only over the heads that add something."""
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


def _active_heads(attn, hd: int) -> torch.Tensor | None:
    """The heads whose value or output weights are not all zero, or None when all are (or when the weights are
    wrapped: LoRA, fp8 storage). A head with zero values or zero output columns adds exactly nothing, so its
    attention is skipped (exact; constructed models have such heads, trained ones do not). Remembered per module
    until its weights change (tensor versions and storage): no scan and no device sync per layer and step."""
    to_v, to_out = attn.to_v, attn.to_out[0]
    plain = all(type(m) is torch.nn.Linear and m.bias is None for m in (attn.to_q, attn.to_k, to_v))
    if not plain or type(to_out) is not torch.nn.Linear or to_v.weight.shape[0] != attn.heads * hd \
            or attn.to_k.weight.shape[0] != attn.heads * hd:  # grouped-query attention: not skipped
        return None
    try:
        key = tuple((w._version, w.data_ptr(), w.device) for w in (to_v.weight, to_out.weight))
    except RuntimeError:  # inference tensors (weights made under torch.inference_mode, as in ComfyUI) keep no
        key = None        # version counter: a change cannot be seen, so look each time
    memo = attn.__dict__.get("_ditfuse_active_heads")
    if key is None or memo is None or memo[0] != key:
        used = (to_v.weight.view(attn.heads, -1).ne(0).any(1)
                & to_out.weight.view(to_out.weight.shape[0], attn.heads, hd).ne(0).any(2).any(0))
        memo = (key, None if bool(used.all()) else used.nonzero().flatten())
        attn.__dict__["_ditfuse_active_heads"] = memo
    return memo[1]


def _repeat_kv(x: torch.Tensor, heads: int) -> torch.Tensor:
    """Grouped-query attention: repeat each key/value head for its query heads (OmniGen-v1 has none)."""
    return x if x.shape[1] == heads else x.repeat_interleave(heads // x.shape[1], dim=1)


def _cached_attention(q, k, v, cache: KVCache, layer: int, heads: torch.Tensor | None = None) -> torch.Tensor:
    """Row b's queries against cache row b ‖ row b's new keys, one row at a time (rows have their own
    lengths: no padding, no mask): the first new token (the time token) sees the cache and itself, the others
    everything. heads: the key/value heads q's heads attend (`_active_heads`), None = all. Returns [B, Lq, H, hd]."""
    bsz, n_heads, lq, hd = q.shape
    out = q.new_empty(bsz, lq, n_heads, v.shape[-1])
    for b in range(bsz):
        kb, vb = cache.join(layer, b, k[b : b + 1], v[b : b + 1])
        if heads is not None:
            kb, vb = kb[:, heads], vb[:, heads]
        kb, vb = _repeat_kv(kb, n_heads), _repeat_kv(vb, n_heads)
        tk = kb.shape[2] - lq + 1
        out[b : b + 1, :1] = _sdpa(q[b : b + 1, :, :1], kb[:, :, :tk], vb[:, :, :tk]).transpose(1, 2)
        out[b : b + 1, 1:] = _sdpa(q[b : b + 1, :, 1:], kb, vb).transpose(1, 2)
    return out


def _attention(q, k, v, mask: torch.Tensor | ConditionMask) -> torch.Tensor:
    """SDPA under a [B, Lq, Lk] bool mask or a ConditionMask (block by block); [B, Lq, H, hd]."""
    if isinstance(mask, ConditionMask):
        return _condition_attention(q, k, v, mask)
    return _sdpa(q, k, v, mask[:, None]).transpose(1, 2)


def _condition_attention(q, k, v, mask: ConditionMask) -> torch.Tensor:
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
        out[:, a:b] = _sdpa(q[:, :, a:b], k[:, :, :b], v[:, :, :b], m).transpose(1, 2)
    return out


def _sdpa(q, k, v, mask: torch.Tensor | None = None) -> torch.Tensor:
    """SDPA over chunks of query rows (at most CHUNK_WORK each), with `cancel.check()` before each chunk.
    mask broadcasts against [B, H, Lq, Lk]; a mask with a query dimension is cut with the rows."""
    bsz, heads, lq, hd = q.shape
    work = CHUNK_WORK.get(q.device.type, CHUNK_WORK_ACCELERATOR)
    rows = max(MIN_CHUNK_ROWS, work // (bsz * heads * k.shape[2] * hd) // CHUNK_ROWS * CHUNK_ROWS)
    if rows >= lq:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    per_row = mask is not None and mask.shape[-2] != 1
    out = q.new_empty(bsz, lq, heads, v.shape[-1]).transpose(1, 2)  # SDPA's own layout: callers transpose back
    for a in range(0, lq, rows):
        cancel.check()
        m = mask[..., a : a + rows, :] if per_row else mask
        out[:, :, a : a + rows] = F.scaled_dot_product_attention(q[:, :, a : a + rows], k, v, attn_mask=m)
    return out

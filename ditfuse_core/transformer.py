"""The OmniGen transformer with an exact KV cache of the condition tokens.

We keep diffusers' `OmniGenTransformer2DModel` (its weights, names and `forward`) and add a second way to
run the same layers: `prefill` runs each branch's condition tokens once and keeps their keys/values;
`step` then runs only the time and output tokens against that cache. Condition tokens never attend to
time/output tokens, so their keys/values do not depend on t and the cache is exact.

Rotary embedding follows Phi-3 LongRoPE *per branch*: each branch uses the short or long factors chosen by
its own total length, as the authors' per-branch forward calls did. diffusers' batched forward takes one
choice for the whole batch, so we compute cos/sin per row.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers import OmniGenTransformer2DModel
from diffusers.loaders import PeftAdapterMixin

from . import cancel
from .sequence import Branch

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
class KVCache:
    """Per-layer keys/values of the condition tokens of a batch of branches (right-padded)."""

    keys: list[torch.Tensor]  # per layer [B, Hkv, Lmax, hd]
    values: list[torch.Tensor]
    valid: torch.Tensor  # [B, Lmax] bool, False on padding
    lengths: list[int]  # condition length per row


@dataclass
class StepMask:
    """A sampling step's attention mask, never materialised: row 0 (the time token) sees the first
    `time_keys` keys (condition and itself), every other row (output tokens) sees all keys; key_valid
    [B, Lk] marks padded cache rows, None when there is none. A full [B, Lq, Lk] bool mask at 1024 px is
    50 M entries per step, and SDPA spends a third of its time reading it."""

    time_keys: int
    key_valid: torch.Tensor | None


@dataclass
class ConditionMask:
    """The condition tokens' mask (`sequence.condition_mask`: causal, each image span sees itself whole),
    never materialised: a query in an image span [s, e) sees keys [0, e), no mask needed; text queries
    see the keys up to themselves. A [L, L] bool mask at 1024 px is 67 M entries, and SDPA is much slower
    under it than over unmasked image blocks."""

    spans: list[tuple[int, int]]
    length: int


class DiTFuseTransformer(OmniGenTransformer2DModel, PeftAdapterMixin):
    """diffusers' OmniGen transformer with peft adapters and a cached sampling path."""

    # ---- rotary embedding ------------------------------------------------------------------------
    def use_long_rope(self, total_length: int) -> bool:
        """Phi-3 LongRoPE switch: long factors when the sequence is longer than the original window."""
        return total_length > self.config.original_max_position_embeddings

    @property
    def rope_mscale(self) -> float:
        """LongRoPE's attention factor on cos/sin (q·k grows by its square) for a window extended beyond the
        original one."""
        rope = self.rope
        scale = rope.max_position_embeddings / rope.original_max_position_embeddings
        return 1.0 if scale <= 1.0 else math.sqrt(1 + math.log(scale) / math.log(rope.original_max_position_embeddings))

    def rope_cos_sin(self, pos: torch.Tensor, total_lengths: list[int], dtype=torch.float32):
        """cos/sin [B, L, head_dim] for positions [B, L], each row with the factors of its own length."""
        rope = self.rope
        dim = rope.dim
        device = pos.device
        exps = torch.arange(0, dim, 2, dtype=torch.int64, device=device).float() / dim
        rows_cos, rows_sin = [], []
        mscale = self.rope_mscale
        for b, total in enumerate(total_lengths):
            factors = rope.long_factor if self.use_long_rope(total) else rope.short_factor
            ext = torch.tensor(factors, dtype=torch.float32, device=device)
            inv_freq = 1.0 / (ext * rope.base**exps)
            freqs = pos[b].float()[:, None] * inv_freq[None, :]
            emb = torch.cat([freqs, freqs], dim=-1)
            rows_cos.append(emb.cos() * mscale)
            rows_sin.append(emb.sin() * mscale)
        return torch.stack(rows_cos), torch.stack(rows_sin)

    # ---- embeddings --------------------------------------------------------------------------------
    def embed_patches(self, latents: torch.Tensor, is_input_image: bool) -> torch.Tensor:
        """[B,C,h,w] → [B, h·w/p², D]: patch tokens plus their position embedding, as OmniGenPatchEmbed, with the
        stride-p projection as one matmul: PyTorch's CPU (oneDNN) bf16 convolution gets this shape wrong
        (16 channels, p 4: errors as large as the outputs, torch 2.13), which made bf16 fusions noise."""
        pe = self.patch_embedding
        conv = pe.input_image_proj if is_input_image else pe.output_image_proj
        p = pe.patch_size
        x = latents.to(self.dtype)
        b, c, h, w = x.shape
        if h % p or w % p:
            raise ValueError(f"latents of {h}×{w} do not split into patches of {p}")
        x = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5).reshape(b, -1, c * p * p)
        return F.linear(x, conv.weight.flatten(1), conv.bias) + pe._cropped_pos_embed(h, w)

    def embed_condition(self, branch: Branch, image_latents: list[torch.Tensor]) -> torch.Tensor:
        """[1, L, D] text embeddings with each placeholder span overwritten by its image's patch tokens."""
        dev = self.embed_tokens.weight.device
        emb = self.embed_tokens(branch.input_ids.to(dev)[None]).clone()
        for (s, e), k in zip(branch.image_spans, branch.image_order):
            tokens = self.embed_patches(image_latents[k].to(dev), is_input_image=True)
            if tokens.shape[1] != e - s:
                raise ValueError(f"image {k + 1} has {tokens.shape[1]} patch tokens but its placeholder has {e - s}")
            emb[:, s:e] = tokens.to(emb.dtype)
        return emb

    def embed_time(self, t: torch.Tensor):
        """Time token [B,1,D] and the final layer's conditioning [B,D]; t is cast to the model dtype first,
        as the authors do."""
        t = t.to(self.embed_tokens.weight.device, self.dtype)
        proj = self.time_proj(t).to(self.dtype)
        return self.time_token(proj).unsqueeze(1), self.t_embedder(proj)

    # ---- layers ------------------------------------------------------------------------------------
    def _layers(self, h, cos, sin, mask, cache: KVCache | None = None, keep: bool = False, kv_only: bool = False):
        """Run all blocks. mask: [B, Lq, Lk] bool over (cached keys ++ new keys), or a StepMask. keep → return
        the new tokens' per-layer keys/values; kv_only → the last block computes only those (the returned
        hidden states are then not the last block's)."""
        kept_k, kept_v = [], []
        last = len(self.layers) - 1
        for i, block in enumerate(self.layers):
            cancel.check()  # Cancel between layers, not only between steps
            past = (cache.keys[i], cache.values[i]) if cache is not None else None
            h, k, v = run_block(block, h, cos, sin, mask, past, kv_only=kv_only and i == last)
            if keep:
                kept_k.append(k)
                kept_v.append(v)
        return h, kept_k, kept_v

    def read_out(self, h, temb, n_tokens, height, width):
        h = self.norm(h)[:, -n_tokens:]
        h = self.proj_out(self.norm_out(h, temb=temb))
        p = self.config.patch_size
        h = h.reshape(h.shape[0], height // p, width // p, p, p, -1)
        return h.permute(0, 5, 1, 3, 2, 4).flatten(4, 5).flatten(2, 3)

    # ---- cached sampling path ----------------------------------------------------------------------
    @torch.no_grad()
    def prefill(self, branches: list[Branch], image_latents: list[list[torch.Tensor]], num_output_tokens: int) -> KVCache:
        """Keys/values of every branch's condition tokens; each branch runs alone (no padding), then the
        rows are right-padded into one batch."""
        per_row = []
        for branch, lats in zip(branches, image_latents):
            emb = self.embed_condition(branch, lats)
            lc = branch.length
            pos = torch.arange(lc, device=emb.device)[None]
            cos, sin = self.rope_cos_sin(pos, [lc + 1 + num_output_tokens])
            mask = ConditionMask(sorted(branch.image_spans), lc)
            _, ks, vs = self._layers(emb, cos, sin, mask, keep=True, kv_only=True)  # their outputs are never read
            per_row.append((ks, vs, lc))
        lmax = max(r[2] for r in per_row)
        keys, values = [], []
        for layer in range(len(self.layers)):
            keys.append(torch.cat([_pad_len(r[0][layer], lmax) for r in per_row]))
            values.append(torch.cat([_pad_len(r[1][layer], lmax) for r in per_row]))
        valid = torch.zeros(len(per_row), lmax, dtype=torch.bool, device=keys[0].device)
        for b, r in enumerate(per_row):
            valid[b, : r[2]] = True
        return KVCache(keys, values, valid, [r[2] for r in per_row])

    @torch.no_grad()
    def step(self, latents: torch.Tensor, t: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """Velocity for latents [B,C,h,w] at times t [B], attending to the cached condition rows."""
        bsz, _, height, width = latents.shape
        x = self.embed_patches(latents, is_input_image=False)
        n = x.shape[1]
        time_tok, temb = self.embed_time(t)
        h = torch.cat([time_tok, x], dim=1)
        dev = h.device
        pos = torch.stack([torch.arange(lc, lc + 1 + n, device=dev) for lc in cache.lengths])
        cos, sin = self.rope_cos_sin(pos, [lc + 1 + n for lc in cache.lengths])
        lmax = cache.valid.shape[1]
        key_valid = None
        if not bool(cache.valid.all()):
            key_valid = torch.cat([cache.valid, cache.valid.new_ones(bsz, 1 + n)], dim=1)
        # the time token does not see the output tokens
        h, _, _ = self._layers(h, cos, sin, StepMask(lmax + 1, key_valid), cache=cache)
        return self.read_out(h, temb, n, height, width)

    # ---- uncached reference path (training, tests) ---------------------------------------------------
    def forward_branch(self, latents: torch.Tensor, t: torch.Tensor, branch: Branch,
                       image_latents: list[torch.Tensor]) -> torch.Tensor:
        """The whole sequence of one branch in one pass, exactly what the model was trained with.
        latents [B,C,h,w] share the same condition (B may be > 1)."""
        from .sequence import full_mask

        bsz, _, height, width = latents.shape
        x = self.embed_patches(latents, is_input_image=False)
        n = x.shape[1]
        time_tok, temb = self.embed_time(t)
        cond = self.embed_condition(branch, image_latents).expand(bsz, -1, -1)
        h = torch.cat([cond, time_tok, x], dim=1)
        total = h.shape[1]
        pos = torch.arange(total, device=h.device)[None].expand(bsz, -1)
        cos, sin = self.rope_cos_sin(pos, [total] * bsz)
        mask = full_mask(branch, n).to(h.device)[None].expand(bsz, -1, -1)
        h, _, _ = self._layers(h, cos, sin, mask)
        return self.read_out(h, temb, n, height, width)


def run_block(block, h, cos, sin, mask, past: tuple[torch.Tensor, torch.Tensor] | None = None,
              kv_only: bool = False):
    """One OmniGen block (diffusers' weights and module names; peft-wrapped projections work unchanged).
    past: cached (keys, values) [B, Hkv, Lc, hd] that the new tokens also attend to. Returns the new hidden
    states and the new tokens' rotated keys and values; kv_only → only the keys and values (h is returned
    as given): the last layer's condition tokens, whose outputs nothing reads."""
    attn = block.self_attn
    bsz, lq, _ = h.shape
    x = block.input_layernorm(h)
    k, v = attn.to_k(x), attn.to_v(x)
    hd = attn.inner_dim // attn.heads
    kvh = k.shape[-1] // hd
    k = k.view(bsz, lq, kvh, hd).transpose(1, 2)
    v = v.view(bsz, lq, kvh, hd).transpose(1, 2)
    k = _apply_rope(k, cos, sin)
    if kv_only:
        return h, k, v
    q = _apply_rope(attn.to_q(x).view(bsz, lq, attn.heads, hd).transpose(1, 2), cos, sin)
    new_k, new_v = k, v
    if past is not None:
        k = torch.cat([past[0], k], dim=2)
        v = torch.cat([past[1], v], dim=2)
    if kvh != attn.heads:
        k = k.repeat_interleave(attn.heads // kvh, dim=1)
        v = v.repeat_interleave(attn.heads // kvh, dim=1)
    o = _attention(q, k, v, mask)
    h = h + attn.to_out[0](o.transpose(1, 2).reshape(bsz, lq, -1))
    h = h + block.mlp(block.post_attention_layernorm(h))
    return h, new_k, new_v


def _attention(q, k, v, mask: torch.Tensor | StepMask | ConditionMask) -> torch.Tensor:
    """SDPA under a [B, Lq, Lk] bool mask, a ConditionMask (block by block) or a StepMask (time-token row
    apart, the rest with at most a broadcast key-padding mask)."""
    if isinstance(mask, torch.Tensor):
        return _sdpa(q, k, v, mask[:, None])
    if isinstance(mask, ConditionMask):
        return _condition_attention(q, k, v, mask)
    kp = None if mask.key_valid is None else mask.key_valid[:, None, None, :]
    tk = mask.time_keys
    head = _sdpa(q[:, :, :1], k[:, :, :tk], v[:, :, :tk], None if kp is None else kp[..., :tk])
    rest = _sdpa(q[:, :, 1:], k, v, kp)
    return torch.cat([head, rest], dim=2)


def _condition_attention(q, k, v, mask: ConditionMask) -> torch.Tensor:
    """Condition tokens' attention by blocks: each image span against all keys up to its end (unmasked),
    each run of text between them causal against the keys up to its end."""
    blocks, start = [], 0
    for s, e in mask.spans:
        if s > start:
            blocks.append((start, s, True))
        blocks.append((s, e, False))
        start = e
    if start < mask.length:
        blocks.append((start, mask.length, True))
    out = []
    for a, b, causal in blocks:
        m = None
        if causal:  # row i (position a + i) sees keys j ≤ a + i
            m = torch.arange(b, device=q.device)[None, :] <= torch.arange(a, b, device=q.device)[:, None]
        out.append(_sdpa(q[:, :, a:b], k[:, :, :b], v[:, :, :b], m))
    return torch.cat(out, dim=2)


def _sdpa(q, k, v, mask: torch.Tensor | None = None) -> torch.Tensor:
    """SDPA over chunks of query rows (at most CHUNK_WORK each), with `cancel.check()` before each chunk.
    mask broadcasts against [B, H, Lq, Lk]; a mask with a query dimension is cut with the rows."""
    bsz, heads, lq, hd = q.shape
    work = CHUNK_WORK.get(q.device.type, CHUNK_WORK_ACCELERATOR)
    rows = max(MIN_CHUNK_ROWS, work // (bsz * heads * k.shape[2] * hd) // CHUNK_ROWS * CHUNK_ROWS)
    if rows >= lq:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    per_row = mask is not None and mask.shape[-2] != 1
    out = q.new_empty(bsz, heads, lq, v.shape[-1])
    for a in range(0, lq, rows):
        cancel.check()
        m = mask[..., a : a + rows, :] if per_row else mask
        out[:, :, a : a + rows] = F.scaled_dot_product_attention(q[:, :, a : a + rows], k, v, attn_mask=m)
    return out


def _apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Phi-3 rotate-half RoPE in float32 (as diffusers' apply_rotary_emb), cos/sin [B, L, hd]."""
    x1, x2 = x.float().chunk(2, dim=-1)
    rot = torch.cat([-x2, x1], dim=-1)
    return (x.float() * cos[:, None] + rot * sin[:, None]).to(x.dtype)


def _pad_len(t: torch.Tensor, length: int) -> torch.Tensor:
    """Right-pad dim 2 of [B, H, L, hd] to `length` with zeros."""
    if t.shape[2] == length:
        return t
    return F.pad(t, (0, 0, 0, length - t.shape[2]))

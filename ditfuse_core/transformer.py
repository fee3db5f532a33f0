"""The OmniGen transformer with an exact KV cache of the condition tokens.

We keep diffusers' `OmniGenTransformer2DModel` (its weights, names and `forward`) and add a second way to
run the same layers: `prefill` runs each branch's condition tokens once and keeps their keys/values;
`step` then runs only the time and output tokens against that cache. Condition tokens never attend to
time/output tokens, so their keys/values do not depend on t and the cache is exact.

Rotary embedding follows Phi-3 LongRoPE *per branch*: each branch uses the short or long factors chosen by
its own total length, as the authors' per-branch forward calls did. diffusers' batched forward takes one
choice for the whole batch, so we compute cos/sin per row.

The cache packs the branches without padding and each row attends to its own keys (no mask); what a step
shares (RoPE of the time and output tokens, the position table) is computed once per call. For a GPU with
little memory the cache can be kept in fp8 or on the CPU, and the blocks on the CPU (`offload_layers`), each
moved to the device just in time (issue #27; options of `sampler.sample`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

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


FP8 = torch.float8_e4m3fn
FP8_MAX = 448.0
KV_CACHE = ("device", "fp8", "cpu")


@dataclass
class KVCache:
    """Per-layer keys/values of the condition tokens of a batch of branch rows.

    `prefill` packs the rows without padding: keys[i] / values[i] are flat, row b is a contiguous
    [1, Hkv, lengths[b], hd] block from token offsets[b] on (`kv_shape` = (Hkv, hd)); padding to the longest
    row cost ~50 % more memory at 1024², and the rows are attended one by one anyway. With offsets None the
    layout is [B, Hkv, Lmax, hd], right-padded (row b = its first lengths[b] keys). Storage may be fp8
    (`key_scales` / `value_scales`: per layer [B, Hkv] power-of-two factors, so the upcast is exact) or the
    CPU; `join` brings a row to the compute device and dtype, one layer at a time."""

    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    valid: torch.Tensor | None = None  # [B, Lmax] of a padded cache; unused: rows are sliced, never masked
    lengths: list[int] = field(default_factory=list)
    offsets: list[int] | None = None
    kv_shape: tuple[int, int] | None = None
    key_scales: list[torch.Tensor] | None = None
    value_scales: list[torch.Tensor] | None = None
    plans: dict = field(default_factory=dict)  # per output size: step RoPE and position embedding
    _work: tuple[torch.Tensor, torch.Tensor] | None = field(default=None, repr=False)  # see join

    def _span(self, store: list[torch.Tensor], layer: int, b: int) -> torch.Tensor:
        """Row b of one layer, [1, Hkv, L, hd] (contiguous when packed: one block to copy or upcast)."""
        length = self.lengths[b]
        if self.offsets is None:
            return store[layer][b : b + 1, :, :length]
        kvh, hd = self.kv_shape
        a = self.offsets[b] * kvh * hd
        return store[layer][a : a + length * kvh * hd].view(1, kvh, length, hd)

    def put(self, layer: int, b: int, k: torch.Tensor, v: torch.Tensor) -> None:
        """Store row b's keys/values [1, Hkv, L, hd] of one layer (in place: no second copy of the cache)."""
        for store, scales, x in ((self.keys, self.key_scales, k), (self.values, self.value_scales, v)):
            if scales is not None:
                x, scales[layer][b] = _fp8(x)
            self._span(store, layer, b).copy_(x, non_blocking=True)

    def join(self, layer: int, b: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Row b's cached keys/values followed by the new ones k, v [1, Hkv, Ln, hd], on their device and in
        their dtype, in a working buffer that the next row and layer reuse (an fp8 or CPU row is upcast or
        copied here, just in time; a CPU allocator would otherwise fault in fresh pages for each)."""
        lc = self.lengths[b]
        shape = (1, k.shape[1], lc + k.shape[2], k.shape[3])
        numel = math.prod(shape)
        w = self._work
        if w is None or w[0].numel() < numel or w[0].dtype != k.dtype or w[0].device != k.device:
            size = math.prod((1, k.shape[1], max(self.lengths) + k.shape[2], k.shape[3]))
            self._work = (k.new_empty(size), v.new_empty(size))
        out = []
        for buf, store, scales, new in ((self._work[0], self.keys, self.key_scales, k),
                                        (self._work[1], self.values, self.value_scales, v)):
            full = buf[:numel].view(shape)
            head = full[:, :, :lc]
            head.copy_(self._span(store, layer, b), non_blocking=True)
            if scales is not None:
                head.mul_(scales[layer][b].to(full.dtype)[None, :, None, None])
            full[:, :, lc:] = new
            out.append(full)
        return out[0], out[1]

    @property
    def nbytes(self) -> int:
        """Bytes of the cached keys/values (wherever they are; not the working buffer of one row)."""
        ts = [*self.keys, *self.values, *(self.key_scales or []), *(self.value_scales or [])]
        return sum(t.numel() * t.element_size() for t in ts)


def _fp8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(fp8 [1, H, L, hd], per-head scale [H]) with x ≈ fp8 × scale; scale = 2^ceil(log2(amax / 448)) so that
    the division and the upcast are exact and no head overflows."""
    amax = x.abs().amax(dim=(0, 2, 3)).float()
    scale = torch.where(amax > 0, torch.exp2(torch.ceil(torch.log2(amax / FP8_MAX))), torch.ones_like(amax))
    return (x.float() / scale[None, :, None, None]).to(FP8), scale


@dataclass
class ConditionMask:
    """The condition tokens' mask (`sequence.condition_mask`: causal, each image span sees itself whole),
    never materialised: a query in an image span [s, e) sees keys [0, e), no mask needed; text queries
    see the keys up to themselves. A [L, L] bool mask at 1024 px is 67 M entries, and SDPA is much slower
    under it than over unmasked image blocks."""

    spans: list[tuple[int, int]]
    length: int


class _BlockOffload:
    """Sequential offload: each block's parameters and buffers live on the CPU (pinned for CUDA) and are copied
    to `device` just before the block runs, then dropped (the CPU copies are kept, nothing is copied back).
    Any tensor added later (a LoRA) is moved the same way."""

    def __init__(self, device: torch.device):
        self.device = device
        self._moved: list = []

    def load(self, block: torch.nn.Module) -> None:
        for mod in block.modules():
            for name, p in mod._parameters.items():
                if p is not None and p.device != self.device:
                    self._moved.append((p, None, None, p.data))
                    p.data = p.data.to(self.device, non_blocking=True)
            for name, t in mod._buffers.items():
                if t is not None and t.device != self.device:
                    self._moved.append((None, mod._buffers, name, t))
                    mod._buffers[name] = t.to(self.device, non_blocking=True)

    def unload(self) -> None:
        for p, store, name, cpu in self._moved:
            if p is not None:
                p.data = cpu
            else:
                store[name] = cpu
        self._moved.clear()


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

    def _inv_freq(self, long: bool, device: torch.device) -> torch.Tensor:
        """LongRoPE inverse frequencies (long or short factors), computed once per device: a factor list turned
        into a tensor per call is a host-to-device copy (and a sync on CUDA) per row and step."""
        memo = self.__dict__.setdefault("_inv_freq_memo", {})
        key = (long, device)
        if key not in memo:
            rope = self.rope
            exps = torch.arange(0, rope.dim, 2, dtype=torch.int64, device=device).float() / rope.dim
            ext = torch.tensor(rope.long_factor if long else rope.short_factor, dtype=torch.float32, device=device)
            memo[key] = 1.0 / (ext * rope.base**exps)
        return memo[key]

    def rope_cos_sin(self, pos: torch.Tensor, total_lengths: list[int], dtype=torch.float32):
        """cos/sin [B, L, head_dim] for positions [B, L], each row with the factors of its own length."""
        rows_cos, rows_sin = [], []
        mscale = self.rope_mscale
        for b, total in enumerate(total_lengths):
            inv_freq = self._inv_freq(self.use_long_rope(total), pos.device)
            freqs = pos[b].float()[:, None] * inv_freq[None, :]
            emb = torch.cat([freqs, freqs], dim=-1)
            rows_cos.append(emb.cos() * mscale)
            rows_sin.append(emb.sin() * mscale)
        return torch.stack(rows_cos), torch.stack(rows_sin)

    # ---- embeddings --------------------------------------------------------------------------------
    def embed_patches(self, latents: torch.Tensor, is_input_image: bool,
                      pos_embed: torch.Tensor | None = None) -> torch.Tensor:
        """[B,C,h,w] → [B, h·w/p², D]: patch tokens plus their position embedding, as OmniGenPatchEmbed, with the
        stride-p projection as one matmul: PyTorch's CPU (oneDNN) bf16 convolution gets this shape wrong
        (16 channels, p 4: errors as large as the outputs, torch 2.13), which made bf16 fusions noise.
        pos_embed: the cropped position table when the caller keeps it (sampling steps)."""
        pe = self.patch_embedding
        conv = pe.input_image_proj if is_input_image else pe.output_image_proj
        p = pe.patch_size
        x = latents.to(self.dtype)
        b, c, h, w = x.shape
        if h % p or w % p:
            raise ValueError(f"latents of {h}×{w} do not split into patches of {p}")
        x = x.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5).reshape(b, -1, c * p * p)
        return F.linear(x, conv.weight.flatten(1), conv.bias) + (pe._cropped_pos_embed(h, w) if pos_embed is None
                                                                 else pos_embed)

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
    def _layers(self, h, cos, sin, mask, cache: KVCache | None = None, sink=None, kv_only: bool = False):
        """Run all blocks. mask: [B, Lq, Lk] bool or a ConditionMask; with a cache, row b of h attends to cache
        row b ‖ its own tokens (the first token, the time token, to cache row b and itself). sink(i, k, v)
        receives each layer's new keys/values; kv_only → the last block computes only those (the returned
        hidden states are then not the last block's)."""
        last = len(self.layers) - 1
        offload = self.__dict__.get("_block_offload")
        inplace = not torch.is_grad_enabled()  # h is ours (a fresh embedding): update it in place
        for i, block in enumerate(self.layers):
            cancel.check()  # Cancel between layers, not only between steps
            if offload is not None:
                offload.load(block)
            past = None if cache is None else (cache, i)
            h, k, v = run_block(block, h, cos, sin, mask, past, kv_only=kv_only and i == last, inplace=inplace)
            if offload is not None:
                offload.unload()
            if sink is not None:
                sink(i, k, v)
        return h

    def read_out(self, h, temb, n_tokens, height, width):
        h = self.norm(h)[:, -n_tokens:]
        h = self.proj_out(self.norm_out(h, temb=temb))
        p = self.config.patch_size
        h = h.reshape(h.shape[0], height // p, width // p, p, p, -1)
        return h.permute(0, 5, 1, 3, 2, 4).flatten(4, 5).flatten(2, 3)

    # ---- low-VRAM: sequential offload of the blocks -----------------------------------------------------
    def offload_layers(self, device: str | torch.device | None = None) -> None:
        """Keep the transformer blocks on the CPU (pinned memory for CUDA) and everything else on `device`
        (default: where the token embedding is); each block is copied to the device just before it runs and
        dropped after. VRAM: the rest of the model (~0.5 GB for OmniGen-v1 in bf16) + one block (~0.23 GB) +
        activations and the KV cache; each pass over the layers moves the weights over PCIe once. Results are
        unchanged. Nothing to do on a CPU. `onload_layers` undoes it."""
        device = torch.device(device) if device is not None else self.embed_tokens.weight.device
        if device.type == "cpu":
            self.onload_layers()
            return
        pin = device.type == "cuda"
        for block in self.layers:
            block.to("cpu")
            for mod in block.modules():
                for p in mod._parameters.values():
                    if p is not None and pin and not p.data.is_pinned():
                        p.data = p.data.pin_memory()
                for name, t in mod._buffers.items():
                    if t is not None and pin and not t.is_pinned():
                        mod._buffers[name] = t.pin_memory()
        for name, child in self.named_children():
            if name != "layers":
                child.to(device)
        self.__dict__["_block_offload"] = _BlockOffload(device)

    def onload_layers(self) -> None:
        """Undo `offload_layers`: the blocks go back to the device of the token embedding."""
        if self.__dict__.pop("_block_offload", None) is not None:
            self.layers.to(self.embed_tokens.weight.device)

    @property
    def layers_offloaded(self) -> bool:
        return "_block_offload" in self.__dict__

    # ---- cached sampling path ----------------------------------------------------------------------
    @torch.no_grad()
    def prefill(self, branches: list[Branch], image_latents: list[list[torch.Tensor]], num_output_tokens: int,
                kv_cache: str = "device") -> KVCache:
        """Keys/values of every branch's condition tokens. Each branch runs alone (no padding) and its keys and
        values go straight into one preallocated packed buffer per layer, so the peak is the cache itself.

        kv_cache: "device" (model dtype, exact); "fp8" (float8_e4m3fn with per-row, per-head power-of-two scales:
        half of bf16, a quarter of fp32, upcast per layer at use; not exact); "cpu" (pinned for CUDA; each row of
        each layer is copied to the device when it is used; exact)."""
        if kv_cache not in KV_CACHE:
            raise ValueError(f"kv_cache must be one of {', '.join(KV_CACHE)}, not {kv_cache!r}")
        dev = self.embed_tokens.weight.device
        lengths = [br.length for br in branches]
        offsets = [sum(lengths[:b]) for b in range(len(lengths))]
        kvh = self.config.num_key_value_heads
        hd = self.config.hidden_size // self.config.num_attention_heads
        where = torch.device("cpu") if kv_cache == "cpu" else dev
        dtype = FP8 if kv_cache == "fp8" else self.dtype
        pin = kv_cache == "cpu" and dev.type == "cuda"

        def buffers():
            return [torch.empty(kvh * sum(lengths) * hd, dtype=dtype, device=where, pin_memory=pin)
                    for _ in self.layers]

        def scales():
            return [torch.ones(len(lengths), kvh, device=dev) for _ in self.layers] if kv_cache == "fp8" else None

        cache = KVCache(buffers(), buffers(), None, lengths, offsets, (kvh, hd), scales(), scales())
        for b, (branch, lats) in enumerate(zip(branches, image_latents)):
            emb = self.embed_condition(branch, lats)
            lc = branch.length
            pos = torch.arange(lc, device=emb.device)[None]
            cos, sin = self.rope_cos_sin(pos, [lc + 1 + num_output_tokens])
            mask = ConditionMask(sorted(branch.image_spans), lc)
            # the last layer's outputs are never read: kv_only
            self._layers(emb, cos, sin, mask, kv_only=True, sink=lambda i, k, v, b=b: cache.put(i, b, k, v))
        return cache

    def _step_plan(self, cache: KVCache, height: int, width: int):
        """What every step at this output size shares: per-row RoPE cos/sin of the time and output tokens
        (positions follow each row's condition) and the cropped position table; computed once per call."""
        plan = cache.plans.get((height, width))
        if plan is None:
            p = self.config.patch_size
            n = (height // p) * (width // p)
            dev = self.embed_tokens.weight.device
            pos = torch.stack([torch.arange(lc, lc + 1 + n, device=dev) for lc in cache.lengths])
            cos, sin = self.rope_cos_sin(pos, [lc + 1 + n for lc in cache.lengths])
            plan = cache.plans[(height, width)] = (cos, sin, self.patch_embedding._cropped_pos_embed(height, width))
        return plan

    @torch.no_grad()
    def step(self, latents: torch.Tensor, t: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """Velocity for latents [B,C,h,w] at times t [B], attending to the cached condition rows."""
        bsz, _, height, width = latents.shape
        cos, sin, pos_embed = self._step_plan(cache, height, width)
        x = self.embed_patches(latents, is_input_image=False, pos_embed=pos_embed)
        n = x.shape[1]
        time_tok, temb = self.embed_time(t)
        h = torch.cat([time_tok, x], dim=1)
        h = self._layers(h, cos, sin, None, cache=cache)
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
        h = self._layers(h, cos, sin, mask)
        return self.read_out(h, temb, n, height, width)


def run_block(block, h, cos, sin, mask, past: tuple[KVCache, int] | None = None, kv_only: bool = False,
              inplace: bool = False):
    """One OmniGen block (diffusers' weights and module names; peft-wrapped projections work unchanged).
    past: (cache, layer): row b of h attends to the cache's row b followed by its own tokens (mask unused).
    Returns the new hidden states and the new tokens' rotated keys and values; kv_only → only the keys and
    values (h is returned as given): the last layer's condition tokens, whose outputs nothing reads.
    inplace: h may be overwritten (inference; never under autograd or for a caller who keeps h)."""
    attn = block.self_attn
    bsz, lq, _ = h.shape
    x = block.input_layernorm(h)
    hd = attn.inner_dim // attn.heads
    active = _active_heads(attn, hd)
    if active is None:
        k, v = attn.to_k(x), attn.to_v(x)
        kvh = k.shape[-1] // hd
        k = _apply_rope(k.view(bsz, lq, kvh, hd).transpose(1, 2), cos, sin)
        v = v.view(bsz, lq, kvh, hd).transpose(1, 2)
    else:  # only the heads that add something; the others' keys/values stay zero (the cache keeps every head)
        rows = (active[:, None] * hd + torch.arange(hd, device=active.device)).reshape(-1)
        ka = _apply_rope(F.linear(x, attn.to_k.weight[rows]).view(bsz, lq, -1, hd).transpose(1, 2), cos, sin)
        va = F.linear(x, attn.to_v.weight[rows]).view(bsz, lq, -1, hd).transpose(1, 2)
        k = ka.new_zeros(bsz, attn.heads, lq, hd).index_copy_(1, active, ka)
        v = va.new_zeros(bsz, attn.heads, lq, hd).index_copy_(1, active, va)
    if kv_only:
        return h, k, v
    if active is None:
        q = _apply_rope(attn.to_q(x).view(bsz, lq, attn.heads, hd).transpose(1, 2), cos, sin)
    else:
        q = _apply_rope(F.linear(x, attn.to_q.weight[rows]).view(bsz, lq, -1, hd).transpose(1, 2), cos, sin)
    if active is not None and active.numel() == 0:
        o = None
    elif past is not None:
        o = _cached_attention(q, k, v, *past, heads=active)
    else:
        o = (_attention(q, _repeat_kv(k, attn.heads), _repeat_kv(v, attn.heads), mask) if active is None
             else _attention(q, ka, va, mask))
    if active is None:
        a = attn.to_out[0](o.reshape(bsz, lq, -1))  # o is [B, Lq, H, hd]: the reshape is a view
    elif active.numel() == 0:
        a = torch.zeros_like(h) + (attn.to_out[0].bias if attn.to_out[0].bias is not None else 0)
    else:
        out = attn.to_out[0]
        a = F.linear(o.reshape(bsz, lq, -1), out.weight[:, rows], out.bias)
    h = h.add_(a) if inplace else h + a
    a = _mlp(block.mlp, block.post_attention_layernorm(h), inplace)
    h = h.add_(a) if inplace else h + a
    return h, k, v


def _active_heads(attn, hd: int) -> torch.Tensor | None:
    """The heads whose value or output weights are not all zero, or None when all are (or when the weights are
    wrapped: LoRA, fp8 storage). A head with zero values or zero output columns adds exactly nothing, so its
    attention is skipped (exact; constructed models have such heads, trained ones do not). Checked each call:
    the weights of plain layers are four small reads, and a later weight change is seen at once."""
    to_v, to_out = attn.to_v, attn.to_out[0]
    plain = all(type(m) is torch.nn.Linear and m.bias is None for m in (attn.to_q, attn.to_k, to_v))
    if not plain or type(to_out) is not torch.nn.Linear or to_v.weight.shape[0] != attn.heads * hd \
            or attn.to_k.weight.shape[0] != attn.heads * hd:  # grouped-query attention: not skipped
        return None
    used = (to_v.weight.view(attn.heads, -1).ne(0).any(1)
            & to_out.weight.view(to_out.weight.shape[0], attn.heads, hd).ne(0).any(2).any(0))
    if bool(used.all()):
        return None
    return used.nonzero().flatten()


def _mlp(mlp, x, inplace: bool):
    """diffusers' OmniGenFeedForward (down(up · silu(gate))), the product formed in silu's output when allowed."""
    if not inplace:
        return mlp(x)
    gate, up = mlp.gate_up_proj(x).chunk(2, dim=-1)
    return mlp.down_proj(mlp.activation_fn(gate).mul_(up))


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


def _apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Phi-3 rotate-half RoPE in float32 (as diffusers' apply_rotary_emb: x·cos + [−x2, x1]·sin), cos/sin
    [B, L, hd], written half by half: x1·c − x2·s and x2·c + x1·s are bit for bit the same sums, without the
    negated copy and the concatenation."""
    xf = x.float()
    half = xf.shape[-1] // 2
    x1, x2 = xf[..., :half], xf[..., half:]
    sin = sin[:, None]
    out = xf * cos[:, None]
    out[..., :half] -= x2 * sin[..., :half]
    out[..., half:] += x1 * sin[..., half:]
    return out.to(x.dtype)

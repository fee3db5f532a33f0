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
moved to the device just in time (issue #27; options of `sampler.sample`). The cache is `kv_cache.KVCache`, the
attention kernels `attention`.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from diffusers import OmniGenTransformer2DModel
from diffusers.loaders import PeftAdapterMixin

from . import cancel
from .attention import ConditionMask, _attention, _cached_attention, _repeat_kv, head_plan
from .kv_cache import FP8, KV_CACHE, KVCache
from .sequence import Branch

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
    plan = head_plan(attn, hd)
    active = plan.heads
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
        o = _cached_attention(q, k, v, *past, plan=plan)
    else:
        o = (_attention(q, _repeat_kv(k, attn.heads), _repeat_kv(v, attn.heads), mask, plan.groups) if active is None
             else _attention(q, ka, va, mask, plan.groups))
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


def _mlp(mlp, x, inplace: bool):
    """diffusers' OmniGenFeedForward (down(up · silu(gate))), the product formed in silu's output when allowed."""
    if not inplace:
        return mlp(x)
    gate, up = mlp.gate_up_proj(x).chunk(2, dim=-1)
    return mlp.down_proj(mlp.activation_fn(gate).mul_(up))


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

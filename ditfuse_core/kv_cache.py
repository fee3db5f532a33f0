"""The condition tokens' keys/values, kept across sampling steps (`DiTFuseTransformer.prefill` fills it, `step`
reads it): packed rows without padding, optionally in fp8 or on the CPU for a GPU with little memory."""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

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

"""Splitting a list of work items across processes: `--shard K/N` (job arrays on clusters without accelerate) and
the ranks of `accelerate launch` / `torchrun`.

Why this way: each item's result depends only on the item (per-item seeds), so any split gives the same files as
one process; the split is by position (item i goes to part i mod N), deterministic for a sorted listing, so a
re-run after a crash sends every item to the same place, and interleaving keeps parts balanced when the
listing is ordered by size or scene.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property

from .validation import UserError


def parse_shard(spec: str | None) -> tuple[int, int]:
    """"K/N" (K = 1 … N) → (K − 1, N); None → (0, 1)."""
    if not spec:
        return 0, 1
    try:
        k, n = (int(x) for x in spec.split("/"))
    except ValueError:
        raise UserError(f"--shard {spec!r}: expected K/N, e.g. 1/4 (part 1 of 4)") from None
    if not 1 <= k <= n:
        raise UserError(f"--shard {spec!r}: K must be 1 … N")
    return k - 1, n


def distributed() -> bool:
    """Launched as one of several processes (accelerate launch, torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@dataclass
class Workers:
    """This process's place: a shard of the listing (--shard), then a rank among the launched processes."""

    shard: tuple[int, int] = (0, 1)
    device_asked: str = "cpu"

    @cached_property
    def state(self):
        """accelerate's PartialState when launched distributed (it sets up the process group and the device of
        this rank), else None. On the CPU (asked for, or no GPU) its process group is gloo's: PartialState
        needs to be told, or it takes one process per GPU and finds none."""
        if not distributed():
            return None
        try:
            import torch
            from accelerate import PartialState
        except ImportError:
            raise UserError("launched as several processes, which needs accelerate (pip install accelerate)") from None
        return PartialState(cpu=self.device_asked == "cpu" or not torch.cuda.is_available())

    @property
    def rank(self) -> int:
        return self.state.process_index if self.state else 0

    @property
    def world(self) -> int:
        return self.state.num_processes if self.state else 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def device(self) -> str:
        """Each rank on its own accelerator: "auto"/"cuda" become this rank's device; an explicit one is kept."""
        asked = self.device_asked
        if self.state is not None and asked in ("auto", "cuda") and self.state.device.type != "cpu":
            return str(self.state.device)
        return asked

    def mine(self, items: list) -> list:
        """The items of this shard and rank: positions i with i ≡ shard (mod N), then every world-th of those
        from this rank."""
        k, n = self.shard
        return items[k::n][self.rank::self.world]

    def gather(self, obj) -> list | None:
        """Every rank's `obj`, in rank order, on the main process (None elsewhere); [obj] in one process."""
        if self.state is None:
            return [obj]
        from accelerate.utils import gather_object

        out = gather_object([obj])
        return out if self.main else None

    def label(self) -> str:
        parts = []
        if self.shard[1] > 1:
            parts.append(f"shard {self.shard[0] + 1}/{self.shard[1]}")
        if self.world > 1:
            parts.append(f"rank {self.rank + 1}/{self.world}")
        return ", ".join(parts)

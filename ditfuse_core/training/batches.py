"""Training batches: whole batches (one crop size per batch) made by data-loader workers; batch k depends only on
(seed, k), so a resumed run sees the same data."""
from __future__ import annotations

import numpy as np
import torch

from . import m3
from .data import to_tensor

CFG_TOKEN = "<cfg>"  # the instruction of a condition-dropout row (no images)


class BatchStream(torch.utils.data.IterableDataset):
    def __init__(self, cfg, start: int = 0, rank: int = 0, world: int = 1):
        self.sources = m3.scan_sources(cfg.data)
        self.cfg, self.start, self.rank, self.world = cfg, start, rank, world

    def __iter__(self):
        wi = torch.utils.data.get_worker_info()
        wid, nw = (wi.id, wi.num_workers) if wi else (0, 1)
        cfg = self.cfg
        gens = {}
        k = self.start + wid
        while True:
            yield make_batch(cfg, k, self.rank, self.world, gens, self.sources)
            k += nw


def make_batch(cfg, k: int, rank: int, world: int, gens: dict, sources) -> dict:
    """Batch number k of this rank: a list of samples at one square size."""
    rng = np.random.default_rng([cfg.seed, 977, k])
    probs = np.asarray(cfg.size_probs or [1.0] * len(cfg.sizes), float)
    size = int(cfg.sizes[int(rng.choice(len(cfg.sizes), p=probs / probs.sum()))])
    if size not in gens:
        gens[size] = m3.M3Generator(sources, seed=cfg.seed, size=size, mix=cfg.mix)
    gen = gens[size]
    items = []
    per_step = cfg.batch * world
    for j in range(cfg.batch):
        idx = k * per_step + rank * cfg.batch + j
        s = gen.sample(idx)
        drop = rng.random() < cfg.cond_dropout
        items.append({"instruction": CFG_TOKEN if drop else s.instruction,
                      "inputs": [] if drop else [to_tensor(x) for x in s.inputs],
                      "target": to_tensor(s.target), "task": s.task})
    return {"k": k, "size": size, "items": items}

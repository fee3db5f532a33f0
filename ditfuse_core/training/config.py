"""The trainer's settings: one dataclass, saved with every checkpoint and given by the flow CLI."""
from __future__ import annotations

from dataclasses import dataclass, field

LORA_TARGETS = ["to_q", "to_k", "to_v", "to_out.0"]


@dataclass
class TrainConfig:
    out: str = "runs/flow"
    model: str | None = None        # base model folder (transformer/ + vae/); None → --init-config
    init_config: dict | None = None  # transformer config for training from scratch
    vae: str | None = None          # VAE folder (default: MODEL/vae)
    lora: bool = False
    lora_rank: int = 8
    lora_alpha: float = 8.0
    lora_targets: list = field(default_factory=lambda: list(LORA_TARGETS))
    freeze: list = field(default_factory=list)  # full training: parameter-name prefixes kept fixed
    data: str | None = None         # shared/data or a pack folder
    mix: dict | None = None
    sizes: list = field(default_factory=lambda: [256])  # square crop sizes, one per batch (random)
    size_probs: list | None = None
    batch: int = 8
    grad_accum: int = 1
    lr: float = 3e-4
    weight_decay: float = 0.0
    warmup: int = 200               # steps (or a fraction of the budget when < 1)
    max_steps: int | None = None
    minutes: float | None = None    # wall-clock budget (the lr schedule follows whichever ends first)
    min_lr_frac: float = 0.1
    grad_clip: float = 1.0
    cond_dropout: float = 0.1
    loss_weight: str = "velocity"   # velocity: plain MSE on x1 − x0; x1: each row weighted by (1 − t)², i.e. the
                                    # error of the implied x1 estimate (high t no longer dominates)
    ema: float = 0.0                # EMA decay of the trainable weights (0 = off)
    mixed_precision: str = "auto"   # auto | no | bf16 | fp16
    grad_checkpointing: bool = False
    seed: int = 0
    workers: int | None = None
    save_every: int = 1000
    log_every: int = 20
    keep_checkpoints: int = 2
    resume: str | None = None       # "latest" or a checkpoint folder
    device: str | None = None
    progress: bool = True

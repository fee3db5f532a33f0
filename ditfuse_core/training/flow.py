"""Flow-matching training of the DiTFuse transformer (full training of a small model, or LoRA on a base).

    # single process (CPU or one GPU)
    python -m ditfuse_core.training.flow --model MODEL_DIR --out runs/lora --lora --max-steps 2000
    # several GPUs / nodes: the same command under accelerate
    accelerate launch --multi_gpu --num_processes 8 -m ditfuse_core.training.flow --model ... --lora ...

Objective (OmniGen / DiTFuse): x0 ~ N(0, I), x1 = VAE latent of the target, t = sigmoid(N(0, 1)),
x_t = t·x1 + (1−t)·x0, loss = MSE(model(x_t, t, condition), x1 − x0). With probability
``cond_dropout`` (0.1) the instruction becomes ``<cfg>`` and the input images are dropped.
Data: :class:`ditfuse_core.training.m3.M3Generator` streamed on the fly (``--data``: shared/data or a pack).

Checkpoints (``OUT/checkpoints/step_N``): trainable weights, optimizer, EMA, step and elapsed time;
``--resume`` continues exactly (same next batch, noise and timesteps, as all randomness is a function of
(seed, step)). Logs: ``OUT/loss_log.jsonl`` and ``OUT/loss.png``.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .. import prompts
from ..sequence import Branch, build_branch
from ..vae import downsample_factor
from . import checkpoints
from .batches import BatchStream, make_batch
from .config import TrainConfig
from .forward import TrainForward
from .loss_plot import plot_loss



# ----------------------------------------------------------------------------------------------------
# the trainer
# ----------------------------------------------------------------------------------------------------

class FlowTrainer:
    def __init__(self, cfg: TrainConfig, transformer=None, vae=None, tokenizer=None):
        from accelerate import Accelerator
        from accelerate.utils import set_seed

        self.cfg = cfg
        mp = cfg.mixed_precision
        cpu = cfg.device == "cpu" or not torch.cuda.is_available()
        if mp == "auto":
            mp = "bf16" if (not cpu and torch.cuda.is_bf16_supported()) else "no"
        from accelerate.utils import DistributedDataParallelKwargs

        # rows without images (condition dropout) can leave input_image_proj unused in a step
        ddp = DistributedDataParallelKwargs(find_unused_parameters=True)
        self.acc = Accelerator(mixed_precision=mp, cpu=cpu, gradient_accumulation_steps=cfg.grad_accum,
                               kwargs_handlers=[ddp])
        set_seed(cfg.seed, device_specific=False)
        self.device = self.acc.device
        self.out = Path(cfg.out)
        if self.acc.is_main_process:
            self.out.mkdir(parents=True, exist_ok=True)

        self.transformer = transformer if transformer is not None else self._load_transformer()
        self.vae = vae if vae is not None else self._load_vae()
        self.vae.to(self.device).eval().requires_grad_(False)
        if tokenizer is None:
            from ..tokenizer import load_tokenizer

            tokenizer = load_tokenizer(cfg.model)
        self.tokenizer = tokenizer
        self.f = downsample_factor(self.vae)
        self.p = self.transformer.config.patch_size
        if self.f * self.p != 16:
            self.acc.print(f"warning: VAE factor {self.f} × patch {self.p} = {self.f * self.p} px per token (not 16)")

        if cfg.lora:
            from peft import LoraConfig

            self.transformer.requires_grad_(False)
            self.transformer.add_adapter(LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_alpha,
                                                    target_modules=list(cfg.lora_targets), init_lora_weights=True),
                                         adapter_name="ditfuse")
            for n_, p_ in self.transformer.named_parameters():
                p_.requires_grad_("lora_" in n_)
        else:
            self.transformer.requires_grad_(True)
            for n_, p_ in self.transformer.named_parameters():
                if any(n_.startswith(f) for f in cfg.freeze):
                    p_.requires_grad_(False)
        if cfg.lora and mp == "bf16":
            # frozen base in bf16 (a 3.8 B base then takes 7.6 GB), adapter weights in fp32
            self.transformer.to(self.device, torch.bfloat16)
            for n_, p_ in self.transformer.named_parameters():
                if p_.requires_grad:
                    p_.data = p_.data.float()
            self.transformer.train()
        else:
            self.transformer.to(self.device, torch.float32).train()
        self.params = [p for p in self.transformer.parameters() if p.requires_grad]
        self.n_trainable = sum(p.numel() for p in self.params)
        self.opt = torch.optim.AdamW(self.params, lr=cfg.lr, betas=(0.9, 0.999), weight_decay=cfg.weight_decay)
        self.model, self.opt = self.acc.prepare(TrainForward(self.transformer, cfg.grad_checkpointing), self.opt)
        self.ema = [p.detach().clone().float() for p in self.params] if cfg.ema > 0 else None
        self.step = 0
        self.elapsed = 0.0
        self._branch_cache: dict = {}
        if cfg.resume:
            self.load_checkpoint(cfg.resume)

    # ---- construction helpers ---------------------------------------------------------------------
    def _load_transformer(self):
        from ..transformer import DiTFuseTransformer

        cfg = self.cfg
        if cfg.init_config is not None:
            torch.manual_seed(cfg.seed)
            return DiTFuseTransformer(**cfg.init_config)
        if not cfg.model:
            raise ValueError("give --model or --init-config")
        from ..checkpoint import load_transformer

        return load_transformer(cfg.model, torch.float32, "cpu")

    def _load_vae(self):
        from ..vae import load_vae

        folder = self.cfg.vae or (Path(self.cfg.model) / "vae" if self.cfg.model else None)
        if folder is None:
            raise ValueError("give --vae or --model with a vae/ folder")
        return load_vae(folder, torch.float32, "cpu")

    @property
    def unwrapped(self):
        return self.acc.unwrap_model(self.model).transformer

    # ---- data → model inputs -------------------------------------------------------------------------
    def branch(self, instruction: str, counts: list[int]) -> Branch:
        key = (instruction, tuple(counts))
        b = self._branch_cache.get(key)
        if b is None:
            b = build_branch(self.tokenizer, prompts.wrap(instruction), counts)
            if len(self._branch_cache) < 20000:
                self._branch_cache[key] = b
        return b

    @torch.no_grad()
    def encode(self, x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """pixels [B,3,H,W] → scaled latents, sampling the posterior with a seeded CPU generator."""
        post = self.vae.encode(x.to(self.device, self.vae.dtype)).latent_dist
        eps = torch.randn(post.mean.shape, generator=gen).to(self.device)
        z = post.mean.float() + post.std.float() * eps
        scale = self.vae.config.scaling_factor
        shift = getattr(self.vae.config, "shift_factor", None) or 0.0
        return (z - shift) * scale

    def loss_on(self, batch: dict) -> tuple[torch.Tensor, dict]:
        """Flow-matching loss of one batch; all randomness from (seed, batch index)."""
        cfg = self.cfg
        k = batch["k"]
        g = torch.Generator().manual_seed(int(cfg.seed) * 1_000_003 + int(k) * 7 + self.acc.process_index)
        items = batch["items"]
        targets = torch.stack([it["target"] for it in items])
        x1 = self.encode(targets, g)
        # input images of all rows in one VAE call
        flat = [im for it in items for im in it["inputs"]]
        lat_flat = list(self.encode(torch.stack(flat), g).split(1)) if flat else []
        image_latents, branches = [], []
        for it in items:
            lats = [lat_flat.pop(0) for _ in it["inputs"]]
            counts = [(lt.shape[-2] // self.p) * (lt.shape[-1] // self.p) for lt in lats]
            image_latents.append(lats)
            branches.append(self.branch(it["instruction"], counts))
        bsz = x1.shape[0]
        x0 = torch.randn(x1.shape, generator=g).to(self.device)
        t = torch.sigmoid(torch.randn(bsz, generator=g)).to(self.device)
        tt = t.view(-1, 1, 1, 1)
        xt = tt * x1 + (1 - tt) * x0
        ut = x1 - x0
        with self.acc.autocast():
            pred = self.model(xt, t, branches, image_latents)
        if cfg.loss_weight == "x1":
            per_row = (pred.float() - ut.float()).pow(2).flatten(1).mean(1)
            loss = (per_row * (1 - t.to(per_row.device)) ** 2).mean()
        else:
            loss = F.mse_loss(pred.float(), ut.float())
        return loss, {"tasks": [it["task"] for it in items], "size": batch["size"]}

    # ---- schedule ----------------------------------------------------------------------------------
    def progress_frac(self) -> float:
        fr = []
        if self.cfg.max_steps:
            fr.append(self.step / self.cfg.max_steps)
        if self.cfg.minutes:
            fr.append(self.elapsed / (self.cfg.minutes * 60))
        return max(fr) if fr else 0.0

    def lr_now(self) -> float:
        cfg = self.cfg
        frac = self.progress_frac()
        w = cfg.warmup
        if w >= 1:
            if self.step < w:
                return cfg.lr * (self.step + 1) / w
            wf = w / cfg.max_steps if cfg.max_steps else 0.0
        else:
            if frac < w:
                return cfg.lr * max(frac / w, 0.01)
            wf = w
        p = min(1.0, max(0.0, (frac - wf) / max(1e-9, 1 - wf)))
        return cfg.lr * (cfg.min_lr_frac + (1 - cfg.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * p)))

    # ---- one optimisation step ---------------------------------------------------------------------------
    def train_step(self, batch: dict) -> float:
        for g_ in self.opt.param_groups:
            g_["lr"] = self.lr_now()
        with self.acc.accumulate(self.model):
            loss, _ = self.loss_on(batch)
            self.acc.backward(loss)
            if self.acc.sync_gradients and self.cfg.grad_clip:
                self.acc.clip_grad_norm_(self.params, self.cfg.grad_clip)
            self.opt.step()
            self.opt.zero_grad(set_to_none=True)
        if self.acc.sync_gradients:
            self.step += 1
            if self.ema is not None:
                d = min(self.cfg.ema, (1 + self.step) / (10 + self.step))
                with torch.no_grad():
                    for e, p in zip(self.ema, self.params):
                        e.mul_(d).add_(p.detach().float(), alpha=1 - d)
        return float(loss.detach())

    @torch.no_grad()
    def eval_loss(self, batch: dict) -> float:
        self.model.eval()
        loss, _ = self.loss_on(batch)
        self.model.train()
        return float(loss)

    @torch.no_grad()
    def val_loss(self, n_batches: int = 4, use_ema: bool = False, start: int = 10 ** 7) -> float:
        """Mean loss on fixed held-out batches (indices from ``start``: never used in training), with the
        raw or the EMA weights; the same noise and timesteps for both."""
        from . import m3

        srcs = m3.scan_sources(self.cfg.data)
        gens: dict = {}
        backup = None
        if use_ema and self.ema is not None:
            backup = [p.detach().clone() for p in self.params]
            for p, e in zip(self.params, self.ema):
                p.copy_(e.to(p.dtype))
        try:
            losses = [self.eval_loss(make_batch(self.cfg, start + i, 0, 1, gens, srcs)) for i in range(n_batches)]
        finally:
            if backup is not None:
                for p, b in zip(self.params, backup):
                    p.copy_(b)
        return float(np.mean(losses))

    # ---- checkpoints (checkpoints.py) ---------------------------------------------------------------
    def save_checkpoint(self, folder: str | Path | None = None) -> Path:
        return checkpoints.save(self, folder)

    def load_checkpoint(self, folder: str | Path) -> None:
        checkpoints.load(self, folder)

    def export(self, folder: str | Path, use_ema: bool = True, dtype=torch.float32) -> Path:
        """Write the trained transformer (full: diffusers folder; LoRA: adapter folder)."""
        return checkpoints.export(self, folder, use_ema, dtype)

    # ---- the loop ----------------------------------------------------------------------------------
    def loader(self):
        from .data import DataLoader, worker_init

        cfg = self.cfg
        ds = BatchStream(cfg, start=self.step * cfg.grad_accum, rank=self.acc.process_index,
                         world=self.acc.num_processes)
        workers = cfg.workers
        if workers is None:
            workers = max(0, min(14, (os.cpu_count() or 2) // max(1, self.acc.num_processes) - 2))
        kw = dict(batch_size=None, num_workers=workers)
        if workers > 0:
            kw.update(prefetch_factor=4, persistent_workers=False, worker_init_fn=worker_init)
        return DataLoader(ds, **kw)

    def done(self) -> bool:
        cfg = self.cfg
        if cfg.max_steps and self.step >= cfg.max_steps:
            return True
        return bool(cfg.minutes and self.elapsed >= cfg.minutes * 60)

    def fit(self) -> dict:
        cfg = self.cfg
        log_path = self.out / "loss_log.jsonl"
        bar = None
        import sys

        if cfg.progress and self.acc.is_main_process and sys.stderr.isatty():
            from tqdm.auto import tqdm

            bar = tqdm(total=cfg.max_steps or None, initial=self.step, desc="train", dynamic_ncols=True)
        t_last = time.time()
        window = []
        last_saved = self.step
        for batch in self.loader():
            if self.done():
                break
            loss = self.train_step(batch)
            now = time.time()
            self.elapsed += now - t_last
            t_last = now
            window.append(loss)
            if self.acc.sync_gradients:
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{np.mean(window[-20:]):.4f}", lr=f"{self.lr_now():.2e}")
                if self.step % cfg.log_every == 0 and self.acc.is_main_process:
                    rec = {"step": self.step, "time_s": round(self.elapsed, 1), "loss": float(np.mean(window)),
                           "lr": self.lr_now(), "size": batch["size"]}
                    window = []
                    with open(log_path, "a") as fh:
                        fh.write(json.dumps(rec) + "\n")
                    if bar is None and cfg.progress and self.step % (cfg.log_every * 5) == 0:
                        print(json.dumps(rec), flush=True)
                if cfg.save_every and self.step - last_saved >= cfg.save_every:
                    self.save_checkpoint()
                    last_saved = self.step
        if bar is not None:
            bar.close()
        self.save_checkpoint()
        if self.acc.is_main_process and log_path.exists():
            plot_loss(log_path, self.out / "loss.png")
        return {"steps": self.step, "wall_s": round(self.elapsed, 1), "trainable_params": self.n_trainable,
                "device": str(self.device), "processes": self.acc.num_processes,
                "mixed_precision": self.acc.mixed_precision}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--model", default=None, help="base model folder (transformer/ + vae/)")
    ap.add_argument("--init-config", default=None, help="JSON file/string: transformer config (train from scratch)")
    ap.add_argument("--vae", default=None)
    ap.add_argument("--lora", action="store_true", help="train a LoRA (r 8, alpha 8, attention projections)")
    ap.add_argument("--lora-rank", type=int, default=8)
    ap.add_argument("--lora-alpha", type=float, default=8.0)
    ap.add_argument("--data", default=None)
    ap.add_argument("--sizes", default="256", help="comma-separated square crop sizes (multiples of 16)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--grad-accum", type=int, default=1)
    ap.add_argument("--lr", type=float, default=None, help="default 1e-4 (LoRA) / 3e-4 (full)")
    ap.add_argument("--warmup", type=float, default=200)
    ap.add_argument("--max-steps", type=int, default=None)
    ap.add_argument("--minutes", type=float, default=None)
    ap.add_argument("--ema", type=float, default=0.0)
    ap.add_argument("--cond-dropout", type=float, default=0.1)
    ap.add_argument("--mixed-precision", default="auto")
    ap.add_argument("--grad-checkpointing", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--save-every", type=int, default=1000)
    ap.add_argument("--resume", default=None, help='"latest" or a checkpoint folder')
    ap.add_argument("--device", default=None)
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    init = None
    if a.init_config:
        init = json.loads(Path(a.init_config).read_text()) if Path(a.init_config).exists() else json.loads(a.init_config)
    cfg = TrainConfig(out=a.out, model=a.model, init_config=init, vae=a.vae, lora=a.lora, lora_rank=a.lora_rank,
                      lora_alpha=a.lora_alpha, data=a.data, sizes=[int(s) for s in a.sizes.split(",")],
                      batch=a.batch, grad_accum=a.grad_accum, lr=a.lr or (1e-4 if a.lora else 3e-4),
                      warmup=a.warmup if a.warmup < 1 else int(a.warmup), max_steps=a.max_steps,
                      minutes=a.minutes, ema=a.ema, cond_dropout=a.cond_dropout,
                      mixed_precision=a.mixed_precision, grad_checkpointing=a.grad_checkpointing, seed=a.seed,
                      workers=a.workers, save_every=a.save_every, resume=a.resume, device=a.device)
    if not cfg.max_steps and not cfg.minutes:
        ap.error("give --max-steps and/or --minutes")
    tr = FlowTrainer(cfg)
    summary = tr.fit()
    if tr.acc.is_main_process:
        dest = Path(a.out) / ("lora" if a.lora else "transformer")
        tr.export(dest)
        summary["exported"] = str(dest)
        (Path(a.out) / "summary.json").write_text(json.dumps(summary, indent=1))
        print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()

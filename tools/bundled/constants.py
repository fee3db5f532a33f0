"""Shared constants of the bundled model's builder: the constructed model's position code and smoothing kernel
(used by `average_init` and `focus_map`) and the recipe's settings."""
from __future__ import annotations

import math

TOKEN_PX = 16  # one transformer token per 16×16 px (VAE factor × patch size), as in OmniGen

# the constructed model's 2-D position code: sin/cos at these frequencies (periods 4 … 128 tokens), unique within
# the position table of GRID tokens of 16 px = 2048 px per side; a neighbour one token off still loses
# 13.9·G_ALIGN logits, one 64 tokens off 2·G_ALIGN
FREQS = [math.pi / 2 ** (k + 1) for k in range(6)]
GRID = 128
# multi-focus filter: octave bands of the latent average (working px; band i = G_σi − G_σi+1, G_0 = identity),
# and the smoothing head's position-code frequencies (indices into FREQS) with logit gains per axis:
# w(Δ) ∝ exp(Σ g·(cos(ωΔ) − 1)), about a Gaussian of σ 1 token, below e^−40 from 8 tokens on, unique within GRID
BAND_SIGMAS = (0, 1, 2, 4, 8, 16, 32)
KERNEL = ((3, 22.2), (5, 60.0))

# sampling defaults written to the model folder's ditfuse.json (cfg = img_cfg = 1: only the conditional
# branch runs; the tiny model is trained for that). The small autoencoders lose less of an image the larger
# they work (docs/notes/findings.md, working size), so inputs are upscaled to max_side 1024 and at least 2× (min_scale),
# up to the position table (2048 px for the constructed transformer, 1024 for a trained tiny one).
TINY_DEFAULTS = {"steps": 10, "cfg": 1.0, "img_cfg": 1.0, "max_side": 1024, "min_scale": 2.0}
# the constructed averaging transformer's flow is a straight line: 4 Euler steps land 60.5–62.9 dB (decoded
# pixels, 8 eval pairs) from its exact target (the detail-mapped latent average), 10 steps 60.8–63.2 dB; 2 steps
# stayed within 1 level of 255 of 8 steps (mean 0.02–0.03 on the example IVIF/MFF pairs) at 60 % of 4 steps' time.
# One step does too (2026-12-06, the whole model as shipped, every prompt: 4 train/roadscene pairs standard and warm,
# 3 train/natural/bsds500 images as multi-focus, exposure, LIGHT++/LIGHT-/CONTRAST±, segmentation pairs): max 1 level,
# mean 0.09–0.21 (2 steps: 0.015–0.045), at 70 % of 2 steps' time. The target is computed from the inputs, so the
# velocity (target − x_t)/(1 − t) points at it from any x_t and the first Euler step from t = 0 lands on it
CONSTRUCTED_STEPS = 1
# ditfuse.json "precision" of a constructed transformer (`devices.resolve_model_dtype`): dtype auto runs it in
# fp32 on every device (on a GPU it would pick bf16, whose rounded weights move the fusion by up to 4 levels)
CONSTRUCTED_PRECISION = {"dtype": "fp32"}

# VAE: f = 4, 16 latent channels (3× compression: room for the ≥ 30 dB PSNR target), channels (32, 64, 64),
# one resnet per level, no mid attention
TINY_VAE = {"f": 4, "latent": 16, "base": 32, "max_ch": 64}

# Training-data mix for the bundled model: mostly the three real fusion tasks and M3.
TINY_MIX = {"m3": 0.28, "ivif": 0.2, "mff": 0.18, "mef": 0.18, "control": 0.08, "seg": 0.08}

# settings per device kind
GPU = {"vae_batch": 64, "vae_size": 128, "vae_lr": 1e-3, "batch": 32, "sizes": [128, 192, 256, 320, 384],
       "size_probs": [0.1, 0.2, 0.35, 0.2, 0.15], "lr": 8e-4, "ema": 0.999}
CPU = {"vae_batch": 8, "vae_size": 128, "vae_lr": 1e-3, "batch": 4, "sizes": [128, 192, 256],
       "size_probs": [0.3, 0.45, 0.25], "lr": 5e-4, "ema": 0.998}

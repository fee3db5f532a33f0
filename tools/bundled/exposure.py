"""Exposure fusion that weighs by exposure: on `<MULTI-EXPOSURE>` prompts each output token takes the two input
tokens at its position with softmax weights of −β_x·(L − c)², L the token's mean luminance (Mertens'
well-exposedness, per token), through the selection's activity logit, instead of equal weights.

Why: averaging an over- and an under-exposed copy halves the contrast of both; the detail-energy selection
(`selection`) picks the dark copy's shadow noise (docs/notes/findings.md). What decides which copy shows a region
well is its exposure.

How, in the bundled model built with --control and --selection (layers: 0 control, 1 average, 2 selection):
  the subtag's gate token ("EX") stops being a gate token: its marker moves from FREE[1] (the gate head's key) to
  MEF_DIM, so the selection is no longer switched off for exposure prompts;
  layer 0's control head also takes each input token to that token (a key like the control subtags'; no prompt of
  the authors' has both), else to BOS (value 0): a flag in FLAG_DIM (no new head: the engine skips unused ones);
  layer 0's MLP: the flag switches the detail-energy units off and two new units on that write −α_x·(L − c)² into
  the selection's energy dim, so layer 2's activity logit β·e becomes −β_x·(L − c)² (L is a linear function of the
  token's latent: the autoencoder is linear). The values stay the selection's: s·(within-token detail).
Without the subtag the flag is 0 (to fp32 rounding of e^−60 weights) and the new units give exactly 0: other prompts
are unchanged. Dims: MEF_DIM and FLAG_DIM are the time and output markers' negative halves (M_T[1], M_OUT[1]),
which no layer reads; output tokens hold −M_OUT there, so the flag's gate weights are mirrored on M_OUT[0], where
they hold +M_OUT: on output tokens the two cancel.
σ (β_x = 1/(2σ²)) is chosen on synthetic exposure pairs made from training images (the model card says which).
"""
from __future__ import annotations

import math

import torch

from .average_init import FREE, M_IN, M_OUT, M_T
from .average_init import _content_basis, nominal_sizes
from .control import FLAG, add_subtag_flag
from .grow import widen_mlps
from .selection import ALPHA, E_DIM, K_OFF

MEF_DIM, FLAG_DIM = M_T[1], M_OUT[1]
V_ROW = 5  # the control head's value rows 0–4 carry its five flags
K_ENERGY = 200.0  # the flag's pull on the energy units' gates (detail energies' |h·z| stay far below)
K_EXPO = 60.0     # the exposure units' gates sit this far below zero without the flag (SiLU(−60) ≈ 1e−25)


def luminance_map(vae, patch: int, n: int = 4000, seed: int = 0) -> tuple[torch.Tensor, float, float]:
    """(a [256], a0, relative residual): a token's mean luminance (0.299 R + 0.587 G + 0.114 B, 0..1) as a·z + a0,
    z its scaled latent ordered (channel, row, col); least squares over random token-sized images."""
    from ditfuse_core import vae as vae_mod

    side = vae_mod.downsample_factor(vae) * patch
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, 4, 4, generator=g)
    x = torch.nn.functional.interpolate(coarse, size=(side, side), mode="bilinear", align_corners=False)
    x = (x + 0.15 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    x = x * torch.rand(n, 1, 1, 1, generator=g) + torch.rand(n, 1, 1, 1, generator=g) * 0.3  # dark … bright
    x = x.clamp(0, 1)
    lum = (x * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1).mean((1, 2)).double()
    z = vae_mod.encode(vae.float(), x * 2 - 1, sample=False).reshape(n, -1).double()
    design = torch.cat([z, torch.ones(n, 1, dtype=torch.float64)], 1)
    sol = torch.linalg.lstsq(design, lum[:, None]).solution[:, 0]
    resid = float(((design @ sol - lum) ** 2).sum() / ((lum - lum.mean()) ** 2).sum())
    return sol[:-1], float(sol[-1]), resid


def mef_token(tokenizer) -> int:
    """The `<MULTI-EXPOSURE>` subtag's gate token (`focus_map.gate_token_ids`' second)."""
    from .focus_map import gate_token_ids

    return gate_token_ids(tokenizer)[1]


@torch.no_grad()
def add_exposure(model, vae, tokenizer, beta_x: float, sel_beta: float, centre: float = 0.5, seed: int = 0) -> dict:
    """Rewrite the bundled transformer (control and selection in place, the selection's β ``sel_beta``) in place;
    returns what was fitted."""
    E = _content_basis(seed)
    sizes = nominal_sizes()
    rms_in, n_in, n_out = sizes["rms_in"], sizes["n_in"], sizes["n_out"]
    f32 = lambda x: x.to(torch.float32)  # noqa: E731

    tok = mef_token(tokenizer)
    model.embed_tokens.weight[tok, FREE[1]] = 0  # no longer a gate token
    add_subtag_flag(model, tok, MEF_DIM, V_ROW, FLAG_DIM)  # the control head: input queries → the MEF token
    # ---- layer 0's MLP ----------------------------------------------------------------------------------------
    mlp = model.layers[0].mlp
    gu, down = mlp.gate_up_proj.weight, mlp.down_proj.weight
    per_flag = rms_in / FLAG  # x_n[FLAG_DIM] = FLAG·flag / rms_in on input tokens
    energy = (down[E_DIM] != 0).nonzero().flatten().tolist()
    assert energy, "no detail-energy units: add the selection first"
    for unit in energy:  # off with the flag
        gu[unit, FLAG_DIM] -= K_ENERGY * per_flag
        gu[unit, M_OUT[0]] -= K_ENERGY * per_flag
    a, a0, resid = luminance_map(vae, model.config.patch_size)
    first = widen_mlps(model, 2)
    mlp = model.layers[0].mlp
    gu, down = mlp.gate_up_proj.weight, mlp.down_proj.weight
    n_units = down.shape[1]
    y = rms_in * (E @ a)            # y·x_n = a·z on input tokens
    y[M_IN[0]] = (a0 - centre) / n_in
    alpha_x = beta_x * ALPHA / sel_beta  # layer 2's logit is sel_beta·e/ALPHA
    for unit, sign in ((first, 1.0), (first + 1, -1.0)):
        gu[unit] = f32(sign * y)
        gu[unit, FLAG_DIM] += K_EXPO * per_flag
        gu[unit, M_OUT[0]] += K_EXPO * per_flag
        gu[unit, M_IN[0]] -= K_EXPO / n_in
        gu[unit, M_OUT[0]] -= K_OFF / n_out  # output tokens: far off, as the energy units
        gu[n_units + unit] = f32(sign * y)
        down[E_DIM, unit] = -alpha_x
    return {"beta_x": round(beta_x, 6), "sigma": round(1 / math.sqrt(2 * beta_x), 4), "centre": centre, "token": tok,
            "luminance_fit_relative_residual": round(resid, 6), "alpha_x": round(alpha_x, 6)}


def main(argv=None) -> int:
    """Add exposure weighting to a built model folder that selects (made with --control and --selection) in place."""
    from ditfuse_core.tokenizer import load_tokenizer

    from .folder_edit import edit_main

    def options(ap):
        ap.add_argument("--sigma", type=float, default=0.2, help="width of the exposure weight (0..1 luminance)")
        ap.add_argument("--centre", type=float, default=0.5)

    def apply(a, folder, tr, model, vae):
        info = add_exposure(model, vae, load_tokenizer(folder), 1.0 / (2 * a.sigma ** 2), tr["selection"]["beta"],
                            a.centre)
        return model, {**info, "chosen_on": "synthetic exposure pairs (2.5–4.5 stops each way) from "
                       "train/natural/bsds500, seed 7"}

    return edit_main(argv, main.__doc__, "exposure", "selection",
                     "exposure weighting rides on the selection: add it first (--selection)", options, apply)


if __name__ == "__main__":
    raise SystemExit(main())

"""Prompt-gated brightness and contrast for the constructed bundled model: one layer put in front of the
averaging construction (`average_init`) that edits each input image's tokens before they are averaged, so
`[CONTROL]. <LIGHT+>. …` fuses and brightens, like the real DiTFuse does.

Why in front, on the input tokens: input tokens see the text before them (causal attention), which holds the
subtag, and their huge marker fixes their RMS, so the layer's gated MLP computes exact on/off switches and
products (SiLU(g)·u with g ≫ 0 or ≪ 0). Output tokens' RMS changes with t.

How: one head takes each input token to the subtag's kind token ("HT" of LIGHT, "ST" of CONTRAST) and its sign
token ("+", "++", "->", "-->"), half and half; it falls back to the BOS token (value 0), so without a control
subtag the layer adds exactly nothing (and the engine skips its four other heads, whose values are zero). Their values land as flags in the FREE dims. The MLP then switches on, per level,
a brightness offset (a constant latent: `delta` in 0..1 pixel units on every channel) or a contrast gain about
mid grey (z ← zh + gain·(z − zh), zh the latent of a uniform 0.5 image).
Amounts (`amounts_from_training`): the brightness offsets give the mean-luminance change of the M3 control targets
(gamma curves, `training.m3.degradations.LIGHT_GAMMA`) on the training images; the contrast gains are the
targets' gains (CONTRAST_GAIN), taken about mid grey instead of each image's mean.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from .average_init import B_SINK, FREE, HEAD_DIM, HIDDEN, M_IN, M_OUT, M_T, MARGIN, MARK_IN, S
from .average_init import _content_basis, _marker_gain, _nope_slots, nominal_sizes
from .grow import insert_layer, widen_mlps

# FREE[0], FREE[1] are the BOS and gate markers of the multi-focus path; the rest carry this layer's markers on the
# text tokens and, after its attention, its flags on the input tokens
KIND_DIMS = {"LIGHT": FREE[2], "CONTRAST": FREE[3]}
SIGN_DIMS = {"+": (FREE[4],), "-": (FREE[5],), "++": (FREE[4], FREE[6]), "--": (FREE[5], FREE[6])}
L, C, P, N, D = FREE[2:7]
K = 200.0  # gate gain: switches sit ≥ 0.15 from their threshold, so on ≥ 30, off ≤ −40
FLAG = 100.0  # a flag's size on the input tokens: ≪ their marker (RMS moves by 1e-4), large enough for fp16 gate weights
CONTRAST_CHANNELS = 3  # the contrast gain scales these latent channels (the principal ones: luma and colour of each 4×4 block)
UNITS = 4 + 2 * 16 * CONTRAST_CHANNELS  # ×16 latent pixels per token
TEXT_VAL = 100.0


def control_tokens(tokenizer) -> dict:
    """{"LIGHT": id, "CONTRAST": id, "+": id, …}: the subtag's kind and sign tokens, read off the core's own
    control prompts (the tokens after "▁<": kind at offset 2, sign at offset 3)."""
    from ditfuse_core import prompts

    found: dict = {}
    for tag in prompts.ADJUSTMENTS:
        text = prompts.control_prompt(tag)
        ids, toks = tokenizer.encode(text), tokenizer.pieces(text)
        at = toks.index("▁<") + 1
        kind, sign = ("LIGHT", tag[5:]) if tag.startswith("LIGHT") else ("CONTRAST", tag[8:])
        for key, tid in ((kind, ids[at + 2]), (sign, ids[at + 3])):
            if found.setdefault(key, tid) != tid:
                raise ValueError(f"{tag}: token {tid} for {key!r}, expected {found[key]}")
    return found


def amounts_from_training(images: list[np.ndarray]) -> dict:
    """Brightness offsets (0..1 units) matching the mean-luminance change of the M3 control targets on
    ``images`` (uint8 RGB training images), and the targets' contrast gains."""
    from ditfuse_core.training.m3.degradations import CONTRAST_GAIN, LIGHT_GAMMA

    out = {}
    for tag, gamma in LIGHT_GAMMA.items():
        d = [float(np.mean((x / 255.0) ** gamma) - np.mean(x / 255.0)) for x in images]
        out[tag] = round(float(np.mean(d)), 4)
    out.update({tag: float(g) for tag, g in CONTRAST_GAIN.items()})
    return out


def _latents(vae, patch: int):
    """(u, zh): the token-vector latent change of +1 (in 0..1 units) on every pixel and channel, and the token
    latent of a uniform mid-grey image; ordered (channel, row, col) like E's columns."""
    from ditfuse_core import vae as vae_mod

    f = vae_mod.downsample_factor(vae)
    side = f * patch
    grey = torch.zeros(1, 3, side, side)   # 0.5 in 0..1 is 0 in the VAE's −1..1
    white = torch.ones(1, 3, side, side)   # +0.5 in 0..1 terms: (white − grey) = 1 in −1..1 = 0.5 in 0..1
    zg = vae_mod.encode(vae.float(), grey, sample=False)[0]
    zw = vae_mod.encode(vae.float(), white, sample=False)[0]
    u = (zw - zg).to(torch.float64) * 2.0  # per 1.0 of 0..1 units
    return u.reshape(-1), zg.to(torch.float64).reshape(-1)


def slot(attn, head: int, index: int, q_dims: dict, k_dims: dict) -> None:
    """One non-rotating slot of ``head`` (also `selection`'s): q = Σ q_dims[d]·x_d, k = Σ k_dims[d]·x_d (weights
    already scaled, `_marker_gain`); the row's other weights are cleared."""
    row = head * HEAD_DIM + _nope_slots()[index]
    attn.to_q.weight[row] = 0
    attn.to_k.weight[row] = 0
    for d, w in q_dims.items():
        attn.to_q.weight[row, d] = w
    for d, w in k_dims.items():
        attn.to_k.weight[row, d] = w


def add_subtag_flag(model, token: int, marker_dim: int, value_row: int, flag_dim: int) -> None:
    """Layer 0's control head also takes input queries to ``token`` (given a marker in ``marker_dim``, a key like
    the control subtags' kind tokens; no prompt of the authors' has both), its value row ``value_row`` writing
    FLAG into the input tokens' ``flag_dim``; a prompt without the token leaves them at BOS (value 0). How
    `exposure` and `focus_energy` learn which subtag a prompt has."""
    model.embed_tokens.weight[token, marker_dim] = TEXT_VAL
    attn = model.layers[0].self_attn
    row = _nope_slots()[1]  # the key slot of the subtag tokens (q: the input marker)
    b_ctl = attn.to_k.weight[row, KIND_DIMS["LIGHT"]].item()
    assert b_ctl != 0 and attn.to_k.weight[row, marker_dim] == 0, "layer 0 is not the control layer"
    attn.to_k.weight[row, marker_dim] = b_ctl
    assert not attn.to_v.weight[value_row].any(), f"the control head's value row {value_row} is in use"
    attn.to_v.weight[value_row, marker_dim] = 1.0 / math.sqrt(HIDDEN)  # the token normalises to √HIDDEN there
    attn.to_out[0].weight[flag_dim, value_row] = FLAG


@torch.no_grad()
def add_control(model, vae, tokenizer, amounts: dict, seed: int = 0):
    """A new transformer: ``model`` (built by `average_init.init_average`) with the control layer in front.
    The other layers' weights are copied unchanged (their MLPs padded with zero units)."""
    new = insert_layer(model, 0)
    if new.config.intermediate_size < UNITS:
        widen_mlps(new, UNITS - new.config.intermediate_size)
    n_units = new.config.intermediate_size
    # the later layers must not read this layer's dims (they do not: their rows/columns there are zero)
    for blk in new.layers[1:]:
        a = blk.self_attn
        for w in (a.to_q.weight, a.to_k.weight, a.to_v.weight):
            assert not w[:, FREE[2:]].any(), "a later layer reads the control flags"
        assert not blk.mlp.gate_up_proj.weight[:, FREE[2:]].any()

    ids = control_tokens(tokenizer)
    emb = new.embed_tokens.weight
    emb[:, FREE[2:]] = 0
    for kind, d in KIND_DIMS.items():
        emb[ids[kind], d] = TEXT_VAL
    for sign, dims in SIGN_DIMS.items():
        for d in dims:
            emb[ids[sign], d] = TEXT_VAL

    ms = new.rope_mscale
    sizes = nominal_sizes()
    rms_in, n_in = sizes["rms_in"], sizes["n_in"]  # n_in: normalised input marker (≈ 12.6), also output/time's
    one = math.sqrt(HIDDEN)                 # a text token with one non-zero dim normalises to √HIDDEN there
    two = math.sqrt(HIDDEN / 2)             # … with two equal ones, √(HIDDEN/2) in each

    blk = new.layers[0]
    for norm in (blk.input_layernorm, blk.post_attention_layernorm):
        norm.weight.fill_(1.0)
    attn = blk.self_attn
    b_sink = _marker_gain(B_SINK, n_in, one, ms)
    b_ctl = _marker_gain(B_SINK + MARGIN, n_in, one, ms)
    # one head: input queries → the subtag's kind and sign tokens (equal logits: a doubled sign's two dims of
    # √(HIDDEN/2) count 1 + (√2 − 1), so its key matches a single dim's √HIDDEN), each taking half the weight;
    # every image/time query (and an input query without a control subtag) → BOS, whose value is 0
    slot(attn, 0, 0, {M_IN[0]: b_sink, M_OUT[0]: b_sink, M_T[0]: b_sink}, {FREE[0]: b_sink})
    slot(attn, 0, 1, {M_IN[0]: b_ctl}, {L: b_ctl, C: b_ctl, P: b_ctl, N: b_ctl, D: (math.sqrt(2) - 1) * b_ctl})
    # values → flags, ×2 for the half weight (1.0 for a single-dim token; P/N 1/√2 and D 1 for the doubled signs)
    v, o = attn.to_v.weight, attn.to_out[0].weight
    for j, (src, scale) in enumerate(((L, one), (C, one), (P, one), (N, one), (D, two))):
        v[j, src] = 2.0 / scale
        o[src, j] = FLAG

    # ---- MLP: switches (gate = K·(flags − threshold), threshold from the input marker) -----------------------
    E = _content_basis(seed)
    u, zh = _latents(vae, new.config.patch_size)
    r = 1.0 / math.sqrt(0.5)  # P/N of a doubled sign
    # (coefficients on L, C, P, N, D, threshold): each is ≥ 0.15 above threshold for its tag, ≥ 0.2 below otherwise
    gates = {
        "LIGHT+": ({L: 1, P: 1, D: -1}, 1.8), "LIGHT++": ({L: 1, P: 1, D: 1}, 2.2),
        "LIGHT-": ({L: 1, N: 1, D: -1}, 1.8), "LIGHT--": ({L: 1, N: 1, D: 1}, 2.2),
        "CONTRAST+": ({C: 1, P: 1, D: -1}, 1.5), "CONTRAST-": ({C: 1, N: 1, D: -1}, 1.5),
    }
    flags = {"LIGHT+": {L: 1, P: 1}, "LIGHT++": {L: 1, P: 1 / r, D: 1}, "LIGHT-": {L: 1, N: 1},
             "LIGHT--": {L: 1, N: 1 / r, D: 1}, "CONTRAST+": {C: 1, P: 1}, "CONTRAST-": {C: 1, N: 1}}
    for tag, (coef, thr) in gates.items():
        for other, fl in flags.items():
            m = sum(c * fl.get(d, 0.0) for d, c in coef.items()) - thr
            assert (m >= 0.149) if other == tag else (m <= -0.2), (tag, other, m)
    gu = torch.zeros(2 * n_units, HIDDEN, dtype=torch.float64)
    down = torch.zeros(HIDDEN, n_units, dtype=torch.float64)

    def gate_row(unit: int, tag: str) -> float:
        coef, thr = gates[tag]
        for d, c in coef.items():
            gu[unit, d] = K * c * rms_in / FLAG   # x_n = FLAG·flag / rms_in
        gu[unit, M_IN[0]] = -K * thr / n_in      # the constant: the input marker
        g_on = K * (sum(c * flags[tag].get(d, 0.0) for d, c in coef.items()) - thr)
        return g_on * torch.sigmoid(torch.tensor(g_on, dtype=torch.float64)).item()  # SiLU(g_on)

    for unit, tag in enumerate(("LIGHT++", "LIGHT+", "LIGHT-", "LIGHT--")):
        on = gate_row(unit, tag)
        gu[n_units + unit, M_IN[0]] = 1.0 / n_in  # up = 1 on input tokens, 0 elsewhere
        down[S, unit] = (E @ (amounts[tag] * u))[S] / on
    for k, tag in enumerate(("CONTRAST+", "CONTRAST-")):
        dims = range(16 * CONTRAST_CHANNELS)  # E's columns run (channel, row, col)
        for j, i in enumerate(dims):
            unit = 4 + len(dims) * k + j
            on = gate_row(unit, tag)
            gu[n_units + unit] = rms_in * E[:, i]          # up = z_i − zh_i on input tokens
            gu[n_units + unit, M_IN[0]] -= zh[i] * rms_in / MARK_IN
            down[:, unit] = (amounts[tag] - 1.0) * E[:, i] / on
    blk.mlp.gate_up_proj.weight.copy_(gu.to(torch.float32))
    blk.mlp.down_proj.weight.copy_(down.to(torch.float32))
    return new


def main(argv=None) -> int:
    """Add the control layer to a built model folder in place (its VAE and tokenizer stay as they are)."""
    import argparse
    import json
    from pathlib import Path

    from ditfuse_core import checkpoint, vae as vae_mod
    from ditfuse_core.tokenizer import load_tokenizer
    from ditfuse_core.training.m3 import sources

    from .folder_edit import save_in_place, transformer_record

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("folder")
    ap.add_argument("--images", type=int, default=200, help="training images the amounts are measured on")
    a = ap.parse_args(argv)
    folder = Path(a.folder)
    model = checkpoint.load_transformer(folder, torch.float32, "cpu")
    if model.layers[0].mlp.gate_up_proj.weight.shape[0] // 2 >= UNITS:
        raise SystemExit(f"{folder} already has a control layer")
    vae = vae_mod.load_vae(checkpoint.vae_folder(folder), torch.float32, "cpu")
    tok = load_tokenizer(folder)
    root = sources.data_root()
    paths = sorted((root / "train" / "natural" / "bsds500").rglob("*.jpg"))[: a.images]
    if not paths:
        raise SystemExit(f"no training images under {root}/train/natural/bsds500 (set DITFUSE_DATA)")
    imgs = [sources.load_rgb(p) for p in paths]
    amounts = amounts_from_training(imgs)
    new = add_control(model, vae, tok, amounts)
    meta, tr = transformer_record(folder)
    tr["control"] = {"amounts": amounts,
                     "measured_on": f"the first {len(imgs)} images (sorted paths) of train/natural/bsds500",
                     "tokens": control_tokens(tok), "layer": 0}
    save_in_place(new, folder, meta)
    print(json.dumps(amounts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

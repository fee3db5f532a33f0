"""Warm targets at full infrared brightness when the instruction asks for them: with the word "warm" in the prompt
(the authors' IVIF preset "Keep the warm targets of the infrared image bright and the scene details of the visible
image sharp."), each output latent pixel where image 2's smooth luminance exceeds image 1's is raised by half the
difference, so the fusion there has image 2's brightness over the average's texture; other prompts are unchanged.

Why: the selection averages the two images' bases, so an infrared target comes out half as bright as in the
infrared image. Brightening them for every prompt costs #25's SSIM bound on the infrared-visible training pairs
(docs/notes/findings.md, "Full infrared brightness, measured"); following the instruction that asks for it does not
touch the standard prompt.

How (layers: 0 control, 1 neighbourhood, 2 average, 3 selection), with heads and MLP units no piece used:
  layer 0, head 1: each input query attends the input tokens at its grid position and BOS with equal logits;
    BOS's value ID_VAL lands along ID_DIR: ½ of it on image 1's tokens (they see one aligned token), ⅓ on image 2's;
  layer 1, head 1: each output query takes the aligned input tokens with an extra logit L_ID·(1 − 2·id), i.e.
    image 2's token, and carries each latent pixel's smooth luminance (the luminance of its channels' planar
    trend over the token); head 2 takes both with equal weights and subtracts the same: the output token holds
    Δ_p = L2_p − L1_p for its 16 latent pixels (in MIRROR, which no later layer reads on output tokens);
  layer 1, head 3: output queries → a token marked in WARM_MARK (the "warm" token) if the prompt has one, else BOS
    (value 0): the flag W;
  layer 1's MLP (output tokens only): per latent pixel, SiLU(γ·Δ_p − K_W·(1 − W))/γ ≈ max(Δ_p, 0) with the flag,
    exactly 0 without, adds half of it along that pixel's luminance direction to the target; other units clear
    the scratch dims again, so the final LayerNorm sees the output tokens as before.
Input tokens, time and text queries go to BOS in the new heads (values 0).
"""
from __future__ import annotations

import math

import torch

from .average_init import B_INPUT, B_SINK, CODE, FREE, G_ALIGN, HEAD_DIM, HIDDEN, M_IN, M_OUT, M_T, MARGIN, MIRROR, S
from .average_init import _align_head, _content_basis, _nope_slots, _slot_logit, nominal_sizes
from .control import TEXT_VAL, _latents
from .exposure import luminance_map
from .focus_energy import planar_basis
from .selection import K_OFF

WARM_MARK = M_IN[1]   # on the "warm" text token: no layer reads it; input tokens hold −MARK_IN there (a key they
                      # lose by far), other tokens 0. Not a flag dim: text tokens collect junk in those, which
                      # their small RMS magnifies
# which image an input token belongs to, along the all-ones direction of the S dims (the content basis E is
# orthogonal to it, so no value reads it) on input tokens after layer 0: ID_VAL·½ image 1, ID_VAL·⅓ image 2. Every
# marker pair dim is some token type's own marker (a time or output key there would outbid every input token)
ID_DIR = torch.zeros(HIDDEN, dtype=torch.float64)
ID_DIR[S] = 1.0 / math.sqrt(len(S))
DELTA = MIRROR[:16]   # output tokens' scratch in layer 1: Δ_p per latent pixel
W_DIM = MIRROR[16]    # output tokens' scratch in layer 1: the flag
ID_VAL = 0.1          # small: in bf16 the rounded weights leak ID_DIR into content reads (ID_VAL 1: 2.2 levels mean)
L_ID = 40.0           # image 2's logit advantage in layer 1's head 1 (image 1's weight e^−40)
K_W = 60.0            # without the flag the units' gates sit this far below zero
K_C = 30.0            # the clearing units' gates (SiLU(30) = 30 to 1e−12)
FP16_BALANCE = 32.0   # layer 1 head 1's input-marker slot: queries ×32, keys ÷32 (same logits, both in fp16 range)
SWITCH = len(CODE) + 1
CHOSEN_ON = ("γ 10 / 20 / 40 on the 15 train/roadscene pairs of the IVIF choice, warm preset against the standard "
             "prompt: the brightening reaches 0.95 / 1.02 / 1.05 of (infrared base − standard fusion) where the "
             "infrared base is ≥ 25 levels above the visible one, and moves the regions where it is darker by −1.7 / "
             "−0.3 / +0.1 levels (SiLU's negative lobe); the smallest γ with ≥ 0.95 and ≤ 1 level: 20")


def warm_token(tokenizer) -> int:
    """The "warm" token of the authors' IVIF preset (`prompts.PRESETS["ivif"][1]`)."""
    from ditfuse_core import prompts

    text = next(p for p in prompts.PRESETS["ivif"] if " warm " in p)
    return tokenizer.encode(text)[tokenizer.pieces(text).index("▁warm")]


def pixel_luminance(vae, patch: int) -> torch.Tensor:
    """R [16, 256]: row p gives the luminance (0..1, without its constant) of latent pixel p's planar-trend base:
    per channel the projection on the token's mean and row/column ramps, then the block luminance map."""
    a, _, _ = luminance_map(vae, patch)                  # token mean luminance = a·z + a0
    blk = a.view(16, 16).sum(1)                          # per channel: one latent pixel's luminance map
    q = planar_basis()
    return torch.kron(blk[None], q @ q.T)                # channel c's 16 pixels → their planar trend, × blk[c]


@torch.no_grad()
def add_warm(model, vae, tokenizer, gamma: float, seed: int = 0) -> int:
    """Rewrite the bundled transformer (control, neighbourhood, average, selection) in place; returns the warm token."""
    E = _content_basis(seed)
    ms = model.rope_mscale
    sizes = nominal_sizes()
    rms_in, rms_out, n_in, n_out = sizes["rms_in"], sizes["rms_out"], sizes["n_in"], sizes["n_out"]
    sink = math.sqrt(HIDDEN)  # a text token with one non-zero dim normalises to √HIDDEN there
    f32 = lambda x: x.to(torch.float32)  # noqa: E731
    emb = model.embed_tokens.weight
    assert not emb[:, WARM_MARK].any(), "a token already carries the warm marker"
    tok = warm_token(tokenizer)
    emb[tok, WARM_MARK] = TEXT_VAL

    # ---- layer 0, head 1: which image an input token belongs to ---------------------------------------------------
    attn = model.layers[0].self_attn
    h = 1
    assert not attn.to_v.weight[h * HEAD_DIM:(h + 1) * HEAD_DIM].any(), "layer 0's head 1 is in use"
    _align_head(attn, h, rms_in, rms_in, G_ALIGN, B_SINK, ms, M_IN[0], M_IN[0], n_in, n_in)
    _slot_logit(attn, h, SWITCH, (M_IN[0],), FREE[0], 12 * G_ALIGN + B_SINK, n_in, sink, ms)  # BOS ties the match
    attn.to_v.weight[h * HEAD_DIM, FREE[0]] = 1.0 / sink
    attn.to_out[0].weight[:, h * HEAD_DIM] = f32(ID_VAL * ID_DIR)

    # ---- layer 1, heads 1–3: Δ_p and the flag on output tokens ----------------------------------------------------
    attn = model.layers[1].self_attn
    R = pixel_luminance(vae, model.config.patch_size)
    for h in (1, 2, 3):
        assert not attn.to_v.weight[h * HEAD_DIM:(h + 1) * HEAD_DIM].any(), f"layer 1's head {h} is in use"
    for h, sign, bonus in ((1, 2.0, B_INPUT + 3 * L_ID), (2, -2.0, B_INPUT)):
        _align_head(attn, h, rms_out, rms_in, G_ALIGN, bonus, ms, M_OUT[0], M_IN[0], n_out, n_in)
        # input and time queries → BOS (value 0); the position match of an input query is RATIO× weaker
        _slot_logit(attn, h, SWITCH, (M_IN[0], M_T[0]), FREE[0], B_SINK, n_in, sink, ms)
        rows = slice(h * HEAD_DIM, h * HEAD_DIM + 16)
        attn.to_v.weight[rows] = f32(R @ E.T)                        # v = R·z / rms_in on input tokens
        attn.to_out[0].weight[DELTA, rows] = f32(sign * rms_in * torch.eye(16, dtype=torch.float64))
    # head 1 prefers image 2: its input-marker slot also reads the image id, −6·L_ID·id (image 1 −3·L_ID, image 2 −2·L_ID,
    # so with the bonus raised by 3·L_ID image 1 keeps B_INPUT and image 2 gets L_ID more)
    row = 1 * HEAD_DIM + _nope_slots()[len(CODE)]
    beta = attn.to_q.weight[row, M_OUT[0]].item()
    attn.to_k.weight[row] += f32(-6 * L_ID * math.sqrt(HEAD_DIM) * rms_in / (beta * n_out * ID_VAL * ms * ms) * ID_DIR)
    # text tokens hold ID_DIR whole over a small RMS: their keys here reach ~2e5, beyond fp16's 65504 (inf·0 = NaN in
    # q·k); the same logits with the slot's queries scaled up and keys down keep both near 5e3 (example pair)
    attn.to_q.weight[row] *= FP16_BALANCE
    attn.to_k.weight[row] /= FP16_BALANCE
    # head 3: output queries → the warm token, else BOS; input and time queries → BOS
    h = 3
    _slot_logit(attn, h, 0, (M_OUT[0], M_IN[0], M_T[0]), FREE[0], B_SINK, n_out, sink, ms)
    _slot_logit(attn, h, 1, (M_OUT[0],), WARM_MARK, B_SINK + MARGIN, n_out, sink, ms)
    attn.to_v.weight[h * HEAD_DIM, WARM_MARK] = 1.0 / sink
    attn.to_out[0].weight[W_DIM, h * HEAD_DIM] = 1.0

    # ---- layer 1's MLP: the brightening units and the clearing units (output tokens only) -------------------------
    u, _ = _latents(vae, model.config.patch_size)  # +1 (0..1 units) on every pixel of a token, as a latent
    mlp = model.layers[1].mlp
    assert not mlp.down_proj.weight.any() and mlp.down_proj.weight.shape[1] >= 16 + 17, "layer 1's MLP is in use"
    gu, down = mlp.gate_up_proj.weight, mlp.down_proj.weight
    n_units = down.shape[1]
    on = K_C * torch.sigmoid(torch.tensor(K_C, dtype=torch.float64)).item()  # a clearing unit's output when on
    for p in range(16):                           # unit p brightens latent pixel p
        gu[p, DELTA[p]] = gamma * rms_out          # Δ_p = MIRROR_p + CODE_p on output tokens (MIRROR = −CODE)
        gu[p, CODE[p]] = gamma * rms_out
        gu[p, W_DIM] = K_W * rms_out
        gu[p, CODE[16]] = K_W * rms_out
        gu[p, M_OUT[0]] = -K_W / n_out
        gu[p, M_IN[0]] = -K_OFF / n_in            # input tokens: far off
        gu[n_units + p, M_OUT[0]] = 1.0 / n_out   # up = 1 on output tokens
        up = torch.zeros(256, dtype=torch.float64)
        up[p::16] = u[p::16]                      # latent pixel p's share of +1 luminance
        down[:, p] = f32(-(0.5 / gamma) * (E @ up))  # −: output tokens hold x_t − target
    for j, (d, code) in enumerate([*zip(DELTA, CODE[:16]), (W_DIM, CODE[16])]):
        unit = 16 + j
        gu[unit, M_OUT[0]] = K_C / n_out
        gu[n_units + unit, d] = 1.0
        gu[n_units + unit, code] = 1.0
        down[d, unit] = -rms_out / on
    return int(tok)


def main(argv=None) -> int:
    """Let the word "warm" in the prompt raise warm targets to image 2's brightness, in a built model folder with the
    neighbourhood layer (made with --control, --selection, --exposure, --neighbourhood), in place."""
    from ditfuse_core.tokenizer import load_tokenizer

    from .folder_edit import edit_main

    def options(ap):
        ap.add_argument("--gamma", type=float, default=20.0, help="sharpness of the soft max(Δ, 0), per unit "
                        "luminance (chosen on training pairs: 20)")

    def apply(a, folder, tr, model, vae):
        tok = add_warm(model, vae, load_tokenizer(folder), a.gamma)
        return model, {"gamma": a.gamma, "token": tok, "layers": [0, 1], "chosen_on": CHOSEN_ON}

    return edit_main(argv, main.__doc__, "warm", "neighbourhood", "the warm targets use the neighbourhood layer's "
                     "free heads: add it first", options, apply)


if __name__ == "__main__":
    raise SystemExit(main())

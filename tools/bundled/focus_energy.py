"""Multi-focus activity from a token's fine detail: the selection's detail energy without each channel's planar
trend over the token, counted GAIN times, on multi-focus prompts; infrared-visible prompts keep the detail energy.

Why: the blurred copy of a multi-focus pair spreads an edge over neighbouring tokens as a gentle ramp; the detail
energy (the token minus its mean) counts that ramp as activity and picks the blurred copy there, a halo around
sharp objects. Without the ramp the energy answers to what only the sharp copy has; on the multi-focus training
pairs it buys Qabf at far less SSIM than a sharper selection does (docs/notes/findings.md).

How, in layer 0's MLP (the control layer's; the selection reads the energy dim E_DIM in the last layer):
  the detail energy's 45 directions (3 principal channels × the 15 zero-mean ones over 4 × 4 latent pixels) split
  into the planar trend (2 per channel) and the rest (13 per channel, "fine"); the units become
  fine (always on), planar (on only with the IVIF flag) and fine again ×(GAIN − 1) (off with the IVIF flag):
  multi-focus prompts get GAIN·fine, infrared-visible ones fine + planar = the detail energy as before;
  `<MULTI-EXPOSURE>` prompts switch all of them off as before (`exposure`).
  The IVIF flag: the IVIF subtag's first token ("MO", `focus_map.gate_token_ids`' first) gets a marker in T_DIM[0]
  and the control head takes input queries to it as to the exposure subtag's token, value → T_DIM[1] (no layer
  reads the T dims of input tokens; output and time queries go to BOS in that head).
GAIN is chosen on the multi-focus training pairs of the selection by the selection's rule.
"""
from __future__ import annotations

import torch

from .average_init import M_IN, M_OUT, S, T_DIM
from .average_init import _content_basis, nominal_sizes
from .control import FLAG, add_subtag_flag
from .exposure import FLAG_DIM, K_ENERGY, K_EXPO
from .grow import widen_mlps
from .selection import ALPHA, CHANNELS, E_DIM, K_OFF

MARK_DIM, IVIF_DIM = T_DIM  # on the IVIF token / on input tokens after the control head
V_ROW = 6  # the control head's value row for the IVIF flag (0–4 control flags, 5 the exposure flag)
CHOSEN_ON = ("the 12 synthetic multi-focus training pairs of the selection's choice, by its rule (the largest Qabf "
             "with SSIM at most 0.0075 below averaging): gain 1 / 1.5 / 2 / 2.5 / 3 → Qabf 0.6765 / 0.6853 / 0.6914 / "
             "0.6956 / 0.6977, SSIM 0.8601 / 0.8592 / 0.8584 / 0.8576 / 0.8563 (averaging 0.8654)")


def planar_basis() -> torch.Tensor:
    """[16, 3] orthonormal: a channel's mean, row ramp and column ramp over a token's 4 × 4 latent pixels."""
    r, c = torch.meshgrid(torch.arange(4.0), torch.arange(4.0), indexing="ij")
    trend = torch.stack([torch.ones(16), r.flatten() - 1.5, c.flatten() - 1.5], 1).double()
    return torch.linalg.qr(trend)[0]


def split_directions() -> tuple[torch.Tensor, torch.Tensor]:
    """(fine [13·CHANNELS, 256], planar [2·CHANNELS, 256]), orthonormal, spanning with each other the selection's
    detail directions (`selection.detail_directions`)."""
    q = planar_basis()
    fine16 = torch.linalg.svd(torch.eye(16, dtype=torch.float64) - q @ q.T)[0][:, :13]
    fine, planar = [], []
    for ch in range(CHANNELS):
        for cols, acc in ((fine16, fine), (q[:, 1:], planar)):
            for j in range(cols.shape[1]):
                h = torch.zeros(256, dtype=torch.float64)
                h[ch * 16:(ch + 1) * 16] = cols[:, j]
                acc.append(h)
    return torch.stack(fine), torch.stack(planar)


@torch.no_grad()
def add_focus_energy(model, tokenizer, gain: float, seed: int = 0) -> int:
    """Rewrite the bundled transformer (control, selection, exposure in place) in place; returns the IVIF token."""
    from .focus_map import gate_token_ids

    E = _content_basis(seed)
    sizes = nominal_sizes()
    rms_in, n_in, n_out = sizes["rms_in"], sizes["n_in"], sizes["n_out"]
    f32 = lambda x: x.to(torch.float32)  # noqa: E731
    per_flag = rms_in / FLAG  # x_n = FLAG·flag / rms_in on input tokens

    tok = gate_token_ids(tokenizer)[0]
    assert not model.embed_tokens.weight[:, MARK_DIM].any(), "a token already carries the IVIF marker"
    add_subtag_flag(model, tok, MARK_DIM, V_ROW, IVIF_DIM)  # the control head: input queries → the IVIF token
    # ---- layer 0's MLP: the energy units ------------------------------------------------------------------------
    mlp = model.layers[0].mlp
    old = (mlp.down_proj.weight[E_DIM] > 0).nonzero().flatten().tolist()  # the exposure units write −α_x
    fine, planar = split_directions()
    assert len(old) == 2 * (len(fine) + len(planar)), "layer 0 does not hold the selection's energy units"
    first = widen_mlps(model, 2 * len(fine))
    mlp = model.layers[0].mlp
    gu, down = mlp.gate_up_proj.weight, mlp.down_proj.weight
    n_units = down.shape[1]
    plan = ([(h, 1.0, 0) for h in fine] + [(h, 1.0, +1) for h in planar]     # 0: always, +1: only with the flag
            + [(h, gain - 1.0, -1) for h in fine])                            # −1: not with the flag
    units = old + list(range(first, first + 2 * len(fine)))
    for j, (h, weight, flag) in enumerate(plan):
        y = f32(rms_in * (E @ h))[S]  # y·x_n = h·z on input tokens
        for unit, sign in ((units[2 * j], 1.0), (units[2 * j + 1], -1.0)):
            gu[unit] = 0
            gu[n_units + unit] = 0
            gu[unit, S] = sign * y
            gu[n_units + unit, S] = sign * y
            gu[unit, M_OUT[0]] = -K_OFF / n_out - K_ENERGY * per_flag  # output tokens off (and FLAG_DIM's mirror)
            gu[unit, FLAG_DIM] = -K_ENERGY * per_flag                    # exposure prompts off
            if flag > 0:  # a baseline K_EXPO below zero through the input marker, lifted by the flag
                gu[unit, M_IN[0]] = -K_EXPO / n_in
                gu[unit, IVIF_DIM] = K_EXPO * per_flag
            elif flag < 0:
                gu[unit, IVIF_DIM] = -K_ENERGY * per_flag
            down[:, unit] = 0
            down[E_DIM, unit] = ALPHA * weight
    return int(tok)


def main(argv=None) -> int:
    """Measure multi-focus activity on the tokens' fine detail, in a built model folder with the selection and the
    exposure weighting (made with --control, --selection and --exposure), in place."""
    from ditfuse_core.tokenizer import load_tokenizer

    from .folder_edit import edit_main

    def options(ap):
        ap.add_argument("--gain", type=float, default=2.0, help="weight of the fine-detail energy on multi-focus "
                        "prompts (chosen on training pairs: 2)")

    def apply(a, folder, tr, model, vae):
        tok = add_focus_energy(model, load_tokenizer(folder), a.gain)
        return model, {"gain": a.gain, "ivif_token": tok, "chosen_on": CHOSEN_ON}

    return edit_main(argv, main.__doc__, "focus_energy", "exposure", "the fine-detail energy rewrites the "
                     "selection's energy units: add the selection and the exposure weighting first", options, apply)


if __name__ == "__main__":
    raise SystemExit(main())

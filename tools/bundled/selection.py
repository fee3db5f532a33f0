"""Multi-focus fusion that selects: each output token takes more of the input whose token has more detail,
instead of the multi-focus filter of the average (`focus_map`), in the bundled model built with `--focus` and
`--control` (layers: 0 control, 1 average, 2 multi-focus).

Why: averaging a sharp and a blurred copy keeps half of each edge; on multi-focus pairs a soft choice per token
lifts Qabf far more than any linear filter while SSIM stays within 0.01 of averaging (docs/notes/findings.md,
"Selecting instead of averaging").

How, exactly in the OmniGen data path:
  layer 1's MLP writes each input token's detail energy e = α·Σ (h·z)² (h: the within-token detail of the three
  principal latent channels; squares as y·SiLU(y) + (−y)·SiLU(−y), both gates pushed far below zero by the
  output marker, so output tokens get none);
  layer 1's head 4 (the multi-focus smoothing head before) sets a flag G on the output tokens when the prompt
  has a gate token (IVIF/MEF subtags, [CONTROL], [SEG]: the tokens that switched the multi-focus filter off);
  layer 2's heads 0–3 take the output token to the two input tokens at its position with an extra logit β·e·(1 − G)
  and carry X·z, while layer 1's heads carry (M − X)·z: the target is M·avg + X·(Σ w_k z_k − avg), w the
  softmax of β·e (σ(β(e1 − e2)) for image 1), X = s·(the token minus its mean, per channel). With a gate token
  the weights are equal and the target is M·avg, as before.
β and s are chosen on synthetic multi-focus training pairs (`choose`), never on eval/.
"""
from __future__ import annotations

import math

import torch

from .average_init import B_SINK, FREE, HEAD_DIM, HIDDEN, M_IN, M_OUT, M_T, MARGIN
from .average_init import _content_basis, _marker_gain, _nope_slots, nominal_sizes
from .control import slot
from .grow import widen_mlps

G_DIM, E_DIM = FREE[2], FREE[3]  # output tokens: the gate flag; input tokens: the detail energy
G_VAL = 30.0
ALPHA = 1e-3                     # energy scale in the residual (keeps it ≪ the input marker)
CHANNELS = 3
ALIGN_GAIN = 3.0
K_OFF = 2e4                      # how far the energy units' gates sit below zero on output tokens (≪ fp16 max)


def detail_directions(channels: int = CHANNELS) -> torch.Tensor:
    """[n, 256] orthonormal: per channel < ``channels``, the 16 positions minus their mean (15 per channel)."""
    rows = []
    basis = torch.linalg.qr(torch.eye(16, dtype=torch.float64) - 1.0 / 16)[0][:, :15]  # zero-mean subspace
    for c in range(channels):
        for j in range(15):
            h = torch.zeros(256, dtype=torch.float64)
            h[c * 16:(c + 1) * 16] = basis[:, j]
            rows.append(h)
    return torch.stack(rows)


def detail_projection(strength: float) -> torch.Tensor:
    """X [256, 256] = strength · (identity minus each channel's mean over the token's 16 positions)."""
    p = torch.eye(256, dtype=torch.float64)
    for c in range(16):
        p[c * 16:(c + 1) * 16, c * 16:(c + 1) * 16] -= 1.0 / 16
    return strength * p


def _row(head: int, index: int) -> int:
    return head * HEAD_DIM + _nope_slots()[index]


@torch.no_grad()
def add_selection(model, beta: float, strength: float, seed: int = 0, align_gain: float = ALIGN_GAIN) -> None:
    """Rewrite layers 1 and 2 of the bundled transformer (control layer in front) in place. align_gain scales
    layer 2's position and input-marker logits, so that an activity logit never outweighs the position match
    (a neighbour one token off loses 13.9·G_ALIGN·align_gain)."""
    E = _content_basis(seed)
    ms = model.rope_mscale
    sizes = nominal_sizes()
    rms_in, mark_out, n_in, n_out = sizes["rms_in"], sizes["mark_out"], sizes["n_in"], sizes["n_out"]
    sink_val = math.sqrt(HIDDEN)
    f32 = lambda x: x.to(torch.float32)  # noqa: E731
    X = detail_projection(strength)

    avg, sel = model.layers[1], model.layers[2]
    # ---- layer 1, heads 0–3: (M − X)·z -------------------------------------------------------------------------
    v = avg.self_attn.to_v.weight
    m = v[:256].to(torch.float64) @ E  # values were M·Eᵀ
    v[:256] = f32((m - X) @ E.T)
    # ---- layer 1, head 4: the gate flag (was the multi-focus smoothing head) --------------------------------------
    attn = avg.self_attn
    h4 = slice(4 * HEAD_DIM, 5 * HEAD_DIM)
    for w in (attn.to_q.weight, attn.to_k.weight, attn.to_v.weight):
        w[h4] = 0
    attn.to_out[0].weight[:, h4] = 0
    b_sink = _marker_gain(B_SINK, n_in, sink_val, ms)
    b_gate = _marker_gain(B_SINK + MARGIN, n_out, sink_val, ms)
    slot(attn, 4, 0, {M_IN[0]: b_sink, M_OUT[0]: b_sink, M_T[0]: b_sink}, {FREE[0]: b_sink})  # → BOS (value 0)
    slot(attn, 4, 1, {M_OUT[0]: b_gate}, {FREE[1]: b_gate})  # output queries → a gate token when there is one
    attn.to_v.weight[4 * HEAD_DIM, FREE[1]] = 1.0 / sink_val
    attn.to_out[0].weight[G_DIM, 4 * HEAD_DIM] = G_VAL
    # ---- layer 0's MLP (the control layer's, widened): the input tokens' detail energy. Not layer 1's: there the
    # text tokens after the images have averaged image content (their queries attend uniformly), and an energy
    # of theirs would draw every output query; in layer 0 only the image tokens carry content ---------------------
    H = detail_directions()
    first = widen_mlps(model, 2 * len(H))
    mlp = model.layers[0].mlp
    n_units = mlp.down_proj.weight.shape[1]
    gu = mlp.gate_up_proj.weight
    down = mlp.down_proj.weight
    for j, h in enumerate(H):
        y = f32(rms_in * (E @ h))  # y·x_n = h·z on input tokens
        for unit, sign in ((first + 2 * j, 1.0), (first + 2 * j + 1, -1.0)):
            gu[unit] = sign * y
            gu[unit, M_OUT[0]] = -K_OFF / n_out  # output tokens: both gates ≈ −K_OFF, the unit ≈ 0
            gu[n_units + unit] = sign * y
            down[E_DIM, unit] = ALPHA
    # (text and time tokens have no content in layer 0, so y = 0 there; input tokens have no output marker)
    # ---- layer 2, heads 0–3: X·z, activity logit β·e·(1 − G), no gate-token preference ----------------------------
    attn = sel.self_attn
    switch = 24 + 1
    b_act = _marker_gain(beta, n_out, ALPHA / rms_in, ms)  # logit β·e for q = n_out, k = α·e / rms_in
    for h in range(4):
        for index in range(switch):
            attn.to_q.weight[_row(h, index)] *= align_gain
        slot(attn, h, switch, {M_OUT[0]: b_act, G_DIM: -b_act * mark_out / G_VAL}, {E_DIM: b_act})
    attn.to_v.weight[:256] = f32(X @ E.T)


@torch.no_grad()
def ungate_ivif(model, tokenizer) -> int:
    """Let infrared-visible prompts select too: their subtag's gate token (`focus_map.gate_token_ids`' first,
    "MO") loses its gate marker, so the gate head finds none. Returns its id."""
    from .focus_map import gate_token_ids

    tok = gate_token_ids(tokenizer)[0]
    model.embed_tokens.weight[tok, FREE[1]] = 0
    return tok


def main(argv=None) -> int:
    """Add the selection to a built model folder (made with --focus and --control) in place; --ivif also (or, on a
    folder that already selects, only) lets infrared-visible prompts select."""
    import argparse
    import json
    from pathlib import Path

    from ditfuse_core import checkpoint
    from ditfuse_core.tokenizer import load_tokenizer

    from .folder_edit import save_in_place, transformer_record

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("folder")
    ap.add_argument("--beta", type=float, default=0.1)
    ap.add_argument("--strength", type=float, default=0.3)
    ap.add_argument("--ivif", action="store_true", help="infrared-visible prompts select too")
    a = ap.parse_args(argv)
    folder = Path(a.folder)
    meta, tr = transformer_record(folder)
    if "selection" in tr and (not a.ivif or "ivif" in tr["selection"].get("tasks", ["mff"])):
        raise SystemExit(f"{folder} already selects")
    if "control" not in tr or "focus_map" not in tr:
        raise SystemExit("the selection rewrites the multi-focus layers of a model built with --focus and --control")
    model = checkpoint.load_transformer(folder, torch.float32, "cpu")
    if "selection" not in tr:
        add_selection(model, a.beta, a.strength)
        tr["selection"] = {"beta": a.beta, "strength": a.strength, "channels": CHANNELS, "align_gain": ALIGN_GAIN,
                           "replaces": "focus_map (layer 2's values and layer 1's smoothing head)",
                           "chosen_on": "synthetic multi-focus pairs from train/natural/bsds500 (focus_pair, seed 7)",
                           "tasks": ["mff"]}
    if a.ivif:
        ungate_ivif(model, load_tokenizer(folder))
        tr["selection"]["tasks"] = ["mff", "ivif"]
        tr["selection"]["ivif_chosen_on"] = ("15 pairs of train/roadscene (numpy default_rng(7).choice(167, 15)): "
                                             "Qabf 0.418 → 0.485, SSIM −0.006 of averaging, VIF 0.535 → 0.541")
    save_in_place(model, folder, meta)
    print(json.dumps(tr["selection"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""A constructed starting point for the bundled model: weights that make the OmniGen architecture compute
"fuse = average of the input latents" exactly, so training only has to learn how to do better than that.

Why: trained from random weights, a small model on a CPU budget never discovered that each output token
should read the input tokens at its own grid position (it produced blocky colour patches). Here the
correspondence, the copy and the flow's 1/(1−t) are built in; the layers after the first start as identities
(DiT-style zero residual branches) and are what training shapes.

Residual-stream layout (hidden 320, 5 heads of 64):
  S      0..256    content: the patch vector z (16 ch × 4 × 4 = 256) through an orthonormal map E ⟂ 1
  CODE   257..280  2-D position code (sin/cos, 6 frequencies per axis), added by the pos_embed buffer
  MIRROR 281..304  −CODE, so every token's aux dims sum to zero (the final LayerNorm subtracts the mean)
  markers          input image ±M_IN, output image ±M_OUT, time token ±M_T (each as a ± pair)
  T      311, 312  ±A0·(1 − t), copied from the time token into every output token
Layer 0: heads 0–3 take each output token to the input tokens at its grid position (position code in rotary
pairs that do not rotate, plus an input-marker bonus), average them and subtract the average from the
token's own content, leaving E(x_t − c); head 4 brings ±A0(1 − t). The final LayerNorm then divides by
σ ∝ (1 − t)·sqrt(|x0 − c|² + 2A0²), and proj_out = −σ-scale·Eᵀ gives v = (c − x_t)/(1 − t): the
straight flow to c = the latent average, which Euler reaches at t = 1 for any step count. With a latent map
M (`detail_map`: a linear map of each token's latent pixels) the values carry M·z, and c = M·average.
"""
from __future__ import annotations

import math

import torch

from .constants import FREQS, GRID, KERNEL

HIDDEN, HEAD_DIM = 320, 64
NOPE_PAIRS = range(19, 32)          # rotary pairs with an "infinite" factor: they do not rotate
S = list(range(0, 257))
CODE = list(range(257, 281))
MIRROR = list(range(281, 305))
M_IN, M_OUT, M_T, T_DIM = (305, 306), (307, 308), (309, 310), (311, 312)
FREE = list(range(313, 320))  # FREE[0], FREE[1]: BOS and gate-token markers of the multi-focus path
# magnitudes. Input tokens carry a huge marker: every input token then has the same RMS whatever its content,
# so both images get equal attention weight, and their own queries are weak (they barely attend to themselves,
# which would erase their content). Output tokens' marker is RATIO× smaller, so an output query's position
# logits against other output tokens are RATIO× those against input tokens: the input bonus B_INPUT outweighs
# that. Layer 0's MLP shrinks both markers to MARK_AFTER for the later layers. A0 sets the time channel that
# the final LayerNorm divides by: it has to outweigh |x0 − c| (v's magnitude is off by the factor
# sqrt((R2_NOMINAL + 2A0²) / (|x0 − c|² + 2A0²)), and Euler's last step keeps that much of the noise). Bright
# or saturated tokens of a real image reach |c|² ≈ 4000 (latent RMS 4); at A0 = 50 they kept ~4 % noise
# (decoded 46 dB from the latent average on a Lytro pair, SSIM −0.006 on five), at 500 ~0.1 % (61 dB).
MARK_IN, RATIO, MARK_AFTER, A0, MARK_T = 10000.0, 20.0, 30.0, 500.0, 5000.0
G_ALIGN, B_TIME = 10.0, 30.0  # logit per matching (axis, frequency); bonus for the time token in head 4
B_SINK, MARGIN = 60.0, 80.0  # multi-focus path: BOS bonus for input/time queries; logits a switch wins by
B_INPUT = 12 * G_ALIGN * (RATIO - 1) + 12 * G_ALIGN  # beats an output token's match with itself by 12·G
# the construction itself stays fixed in training (Adam's steps would soon undo its exact cancellations)
FROZEN = ("patch_embedding.", "time_token.", "layers.0.", "norm.", "proj_out.")


def frozen(focus: bool = False) -> tuple[str, ...]:
    """FROZEN, plus layer 1 when it holds the multi-focus path (`init_average(focus=…)`)."""
    return FROZEN + (("layers.1.",) if focus else ())
R2_NOMINAL = 256.0 + 150.0  # E|x0 − c|² per token (unit-variance noise, averaged latents)


def config(latent_channels: int = 16, patch_size: int = 4, layers: int = 6, intermediate: int = 1024,
           pos_embed_max_size: int = GRID) -> dict:
    """OmniGen architecture at hidden 320; rotary pairs NOPE_PAIRS are position-free (factor 1e9)."""
    assert latent_channels * patch_size ** 2 == 256, "the layout holds a 256-dim patch vector"
    assert pos_embed_max_size <= GRID, f"the position code is unique within {GRID} tokens per side"
    factors = [1e9 if i in NOPE_PAIRS else 1.0 for i in range(HEAD_DIM // 2)]
    return dict(in_channels=latent_channels, patch_size=patch_size, hidden_size=HIDDEN, rms_norm_eps=1e-5,
                num_attention_heads=HIDDEN // HEAD_DIM, num_key_value_heads=HIDDEN // HEAD_DIM,
                intermediate_size=intermediate, num_layers=layers, pad_token_id=32000, vocab_size=32064,
                max_position_embeddings=131072, original_max_position_embeddings=4096, rope_base=10000,
                rope_scaling={"short_factor": factors, "long_factor": factors},
                pos_embed_max_size=pos_embed_max_size)


def _content_basis(seed: int = 0) -> torch.Tensor:
    """E [320, 256]: orthonormal columns on the S dims, orthogonal to the all-ones vector."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(len(S), 256, generator=g, dtype=torch.float64)
    ones = torch.ones(len(S), 1, dtype=torch.float64) / math.sqrt(len(S))
    a = a - ones @ (ones.T @ a)
    q, _ = torch.linalg.qr(a)
    e = torch.zeros(HIDDEN, 256, dtype=torch.float64)
    e[S] = q
    return e


def _position_code(grid: int) -> torch.Tensor:
    """[grid², 24]: per axis and frequency (sin, cos) of the row / column index."""
    idx = torch.arange(grid * grid, dtype=torch.float64)
    rows, cols = idx // grid, idx % grid
    feats = []
    for p in (rows, cols):
        for w in FREQS:
            feats += [torch.sin(w * p), torch.cos(w * p)]
    return torch.stack(feats, dim=1)


def _rms(*sq_norms: float) -> float:
    return math.sqrt(sum(sq_norms) / HIDDEN)


def nominal_sizes() -> dict:
    """Nominal RMS of input / output / time tokens at layer 0 (content |z|² ≈ 256, code 24, markers), the output
    marker that gives the output RMS, and the input / output markers' normalised values n_in, n_out (what every
    added piece of the construction sizes its weights by)."""
    rms_in = _rms(256, 24, 2 * MARK_IN ** 2)
    rms_out = rms_in / RATIO
    mark_out = math.sqrt((HIDDEN * rms_out ** 2 - 256 - 24) / 2)
    return {"rms_in": rms_in, "rms_out": rms_out, "rms_t": _rms(2 * MARK_T ** 2, A0 ** 2), "mark_out": mark_out,
            "n_in": MARK_IN / rms_in, "n_out": mark_out / rms_out}


def _nope_slots() -> list[int]:
    half = HEAD_DIM // 2
    return list(NOPE_PAIRS) + [i + half for i in NOPE_PAIRS]


def _marker_gain(bonus: float, q_val: float, k_val: float, mscale: float) -> float:
    """Weight w with q = w·q_val, k = w·k_val (normalised marker values) giving the logit ``bonus``."""
    return math.sqrt(bonus * math.sqrt(HEAD_DIM) / (q_val * k_val)) / mscale


def _align_head(attn, head: int, rms_q: float, rms_k: float, gain: float, bonus: float, mscale: float,
                q_mark: int, k_mark: int, q_mark_val: float, k_mark_val: float, clear: bool = True):
    """q/k of one head: position code in the non-rotating slots (logit gain·Σcos per matching pair) and a
    marker pair (logit +bonus when the query carries q_mark and the key k_mark)."""
    slots = _nope_slots()
    rows = slice(head * HEAD_DIM, (head + 1) * HEAD_DIM)
    wq, wk = attn.to_q.weight, attn.to_k.weight
    if clear:
        wq[rows] = 0
        wk[rows] = 0
    else:
        for s in slots:
            wq[head * HEAD_DIM + s] = 0
            wk[head * HEAD_DIM + s] = 0
    # logit = (q·k)·mscale²/8 with q = α·code/rms_q, k = α·code/rms_k
    alpha = math.sqrt(gain * math.sqrt(HEAD_DIM) * rms_q * rms_k) / mscale
    for i, d in enumerate(CODE):
        wq[head * HEAD_DIM + slots[i], d] = alpha
        wk[head * HEAD_DIM + slots[i], d] = alpha
    beta = _marker_gain(bonus, q_mark_val, k_mark_val, mscale)
    wq[head * HEAD_DIM + slots[len(CODE)], q_mark] = beta
    wk[head * HEAD_DIM + slots[len(CODE)], k_mark] = beta


def _time_head(attn, head: int, sizes: dict, ms: float) -> None:
    """Head ``head``: output tokens → the time token (marker only, no position code); its value ±A0(1 − t)
    goes to the T dims, where the final LayerNorm reads it."""
    rows = slice(head * HEAD_DIM, (head + 1) * HEAD_DIM)
    attn.to_q.weight[rows] = 0
    attn.to_k.weight[rows] = 0
    attn.to_v.weight[rows] = 0
    attn.to_out[0].weight[:, rows] = 0
    s0 = head * HEAD_DIM + _nope_slots()[0]
    beta = _marker_gain(B_TIME, sizes["mark_out"] / sizes["rms_out"], MARK_T / sizes["rms_t"], ms)
    attn.to_q.weight[s0, M_OUT[0]] = beta
    attn.to_k.weight[s0, M_T[0]] = beta
    attn.to_v.weight[head * HEAD_DIM, T_DIM[0]] = 1.0
    attn.to_out[0].weight[T_DIM[0], head * HEAD_DIM] = sizes["rms_t"]
    attn.to_out[0].weight[T_DIM[1], head * HEAD_DIM] = -sizes["rms_t"]


def _shrink_markers(mlp, sizes: dict) -> None:
    """The MLP shrinks the input and output markers to MARK_AFTER (what later layers and the final
    LayerNorm expect)."""
    n_int = mlp.down_proj.weight.shape[1]
    mlp.gate_up_proj.weight.zero_()
    mlp.down_proj.weight.zero_()
    for unit, (mark, val, rms) in enumerate(((M_IN, MARK_IN, sizes["rms_in"]), (M_OUT, sizes["mark_out"], sizes["rms_out"]))):
        n_mark = val / rms                                       # ≈ 12.6 on the tokens that carry it
        mlp.gate_up_proj.weight[unit, mark[0]] = 2.0             # gate ≈ 25: SiLU ≈ identity; 0 elsewhere
        mlp.gate_up_proj.weight[n_int + unit, mark[0]] = 1.0     # up = n_mark
        amount = (val - MARK_AFTER) / (2.0 * n_mark * n_mark)
        mlp.down_proj.weight[mark[0], unit] = -amount
        mlp.down_proj.weight[mark[1], unit] = amount


def _slot_logit(attn, head: int, slot: int, q_dims, k_dim: int, bonus: float, q_val: float, k_val: float,
                ms: float) -> None:
    """One non-rotating slot of ``head``: logit +bonus when the query carries any of ``q_dims`` (normalised
    value q_val) and the key carries ``k_dim`` (k_val)."""
    beta = _marker_gain(bonus, q_val, k_val, ms)
    row = head * HEAD_DIM + _nope_slots()[slot]
    attn.to_q.weight[row] = 0
    attn.to_k.weight[row] = 0
    for d in q_dims:
        attn.to_q.weight[row, d] = beta
    attn.to_k.weight[row, k_dim] = beta


def _kernel_slots(attn, head: int, rms_q: float, rms_k: float, ms: float) -> float:
    """The first 4·len(KERNEL) non-rotating slots of ``head``: position logits Σ g·cos(ω·Δ) per axis, the smoothing
    kernel (`focus_map.kernel_logit`) for queries and keys of RMS rms_q, rms_k. Returns the logit at Δ = 0."""
    slots = _nope_slots()
    peak = 0.0
    for i, (f, gain) in enumerate(KERNEL):  # per axis: CODE holds (sin, cos) of FREQS[f] at 2f, 2f + 1
        alpha = math.sqrt(gain * math.sqrt(HEAD_DIM) * rms_q * rms_k) / ms
        for axis in range(2):
            for j in range(2):
                row = head * HEAD_DIM + slots[4 * i + 2 * axis + j]
                d = CODE[12 * axis + 2 * f + j]
                attn.to_q.weight[row, d] = alpha
                attn.to_k.weight[row, d] = alpha
        peak += 2 * gain
    return peak


def _build_focus(model, focus: dict, E: torch.Tensor, sizes: dict, ms: float) -> None:
    """The multi-focus filter (`focus_map`): target M·c + D·c + O·smooth(P·c) unless the prompt carries a gate
    token (the first token of the IVIF/MEF subtags and of the control/segmentation tags, ``focus["gate_ids"]``).

    Layer 0, head 4: each output token's smoothed neighbourhood of input tokens (position logits of two
    code frequencies, `focus_map.KERNEL`), value P, out −O. Layer 1, heads 0–3: the input tokens at the
    output token's own position again, value D; head 4: the time copy (moved here from layer 0, so output
    tokens keep a steady RMS through layer 0 and 1 and the kernel's width does not change with t); layer 1's
    MLP shrinks the markers. Switches: gate tokens are keys (marker FREE[1]) that these heads' output
    queries prefer to every input token, with value 0; the BOS token (FREE[0]) is such a key for the input and time
    tokens' queries in layer 0, so their states reach layer 1 unchanged (their own attention would otherwise
    mix the image into them). Text embeddings carry no content (S = 0): every text value is zero."""

    rms_in, rms_out = sizes["rms_in"], sizes["rms_out"]
    f32 = lambda x: x.to(torch.float32)  # noqa: E731
    emb = model.embed_tokens.weight
    emb[:, S] = 0
    emb[:, FREE[:2]] = 0
    bos, sink_val = 1, math.sqrt(HIDDEN)  # a token with one large dim normalises to sqrt(HIDDEN) there
    emb[bos, FREE[0]] = 100.0
    for i in focus["gate_ids"]:
        emb[int(i), FREE[1]] = 100.0
    n_in, n_out = sizes["n_in"], sizes["n_out"]  # the markers' normalised values (equal for M_T)
    switch = len(CODE) + 1  # the slot after the position code and the input marker (`_align_head`)

    # ---- layer 0: heads 0–3 as built; input/time queries go to BOS; head 4 smooths the neighbourhood
    attn = model.layers[0].self_attn
    for h in range(4):
        _slot_logit(attn, h, switch, (M_IN[0], M_T[0]), FREE[0], B_SINK, n_in, sink_val, ms)
    h4 = slice(4 * HEAD_DIM, 5 * HEAD_DIM)
    for w in (attn.to_q.weight, attn.to_k.weight, attn.to_v.weight):
        w[h4] = 0
    attn.to_out[0].weight[:, h4] = 0
    peak = _kernel_slots(attn, 4, rms_out, rms_in, ms)
    # output keys' code is RATIO× stronger than input keys' (they are normalised by rms_out): the input
    # bonus beats the output token at the query's own position by MARGIN, with 2 % to spare for its RMS
    b_in = 1.02 * RATIO * peak - peak + MARGIN
    _slot_logit(attn, 4, 4 * len(KERNEL), (M_OUT[0],), M_IN[0], b_in, n_out, n_in, ms)
    _slot_logit(attn, 4, 4 * len(KERNEL) + 1, (M_IN[0], M_T[0]), FREE[0], B_SINK, n_in, sink_val, ms)
    _slot_logit(attn, 4, 4 * len(KERNEL) + 2, (M_OUT[0],), FREE[1], peak + b_in + MARGIN, n_out, sink_val, ms)
    p_map, o_map = focus["P"].to(torch.float64), focus["O"].to(torch.float64)
    assert p_map.shape[0] <= HEAD_DIM, "the smoothing head carries at most HEAD_DIM directions"
    attn.to_v.weight[4 * HEAD_DIM: 4 * HEAD_DIM + p_map.shape[0]] = f32(p_map @ E.T)
    attn.to_out[0].weight[:, 4 * HEAD_DIM: 4 * HEAD_DIM + p_map.shape[0]] = f32(-rms_in * E @ o_map)
    model.layers[0].mlp.gate_up_proj.weight.zero_()
    model.layers[0].mlp.down_proj.weight.zero_()

    # ---- layer 1: D at the own position (gated), the time copy, the markers shrunk -----------------
    blk = model.layers[1]
    attn = blk.self_attn
    for norm in (blk.input_layernorm, blk.post_attention_layernorm):
        norm.weight.fill_(1.0)
    for h in range(4):
        _align_head(attn, h, rms_out, rms_in, G_ALIGN, B_INPUT, ms, M_OUT[0], M_IN[0], n_out, n_in)
        _slot_logit(attn, h, switch, (M_OUT[0],), FREE[1], 12 * G_ALIGN + B_INPUT + MARGIN, n_out, sink_val, ms)
    attn.to_v.weight.zero_()
    attn.to_v.weight[:256] = f32(focus["D"].to(torch.float64) @ E.T)
    attn.to_out[0].weight.zero_()
    attn.to_out[0].weight[:, :256] = f32(-rms_in * E)
    _time_head(attn, 4, sizes, ms)
    _shrink_markers(blk.mlp, sizes)


@torch.no_grad()
def init_average(model, seed: int = 0, latent_map: torch.Tensor | None = None, focus: dict | None = None) -> dict:
    """Overwrite ``model`` (built from :func:`config`, default random init) with the averaging construction.
    Layers ≥ 1 keep their random q/k/v and MLP input weights, get the alignment prior on head 0, and start
    with zero output projections. ``latent_map`` (`detail_map.fit_detail_map`), [C·p², C·p²] or [C, C]: the
    flow goes to M·c instead, M applied to every token (or latent pixel) of the average, in the values heads
    0–3 read. ``focus`` (`focus_map.fit_focus_map`, plus "gate_ids"): layer 1 is built too (see
    :func:`_build_focus`), the layers after it start as identities."""
    cfg = model.config
    assert cfg.hidden_size == HIDDEN and cfg.num_attention_heads == HIDDEN // HEAD_DIM
    p, ch = cfg.patch_size, cfg.in_channels
    E = _content_basis(seed)
    ms = model.rope_mscale
    f32 = lambda x: x.to(torch.float32)  # noqa: E731

    # ---- embeddings -----------------------------------------------------------------------------
    pe = model.patch_embedding
    grid = cfg.pos_embed_max_size
    code = _position_code(grid)
    pos = torch.zeros(1, grid * grid, HIDDEN, dtype=torch.float64)
    pos[0][:, CODE] = code
    pos[0][:, MIRROR] = -code
    pe.pos_embed.copy_(f32(pos))
    sizes = nominal_sizes()
    rms_in, rms_out, mark_out = sizes["rms_in"], sizes["rms_out"], sizes["mark_out"]
    for proj, (mark, val) in ((pe.input_image_proj, (M_IN, MARK_IN)), (pe.output_image_proj, (M_OUT, mark_out))):
        proj.weight.copy_(f32(E).reshape(HIDDEN, ch, p, p))
        proj.bias.zero_()
        proj.bias[mark[0]], proj.bias[mark[1]] = val, -val
    aux = CODE + MIRROR + list(M_IN + M_OUT + M_T + T_DIM)
    model.embed_tokens.weight[:, aux] = 0

    # time token: unit 0 = 20 + 10 t (SiLU ≈ identity there), unit 1 = 20 → rows T = ±A0(1 − t), M_T marker
    t = torch.tensor([0.0, 1.0])
    feats = model.time_proj(t)
    k = int(torch.argmin((feats[1] - feats[0] - 0.01).abs() + (feats[0] != 0) * 1e3))  # sin(0.01 t)
    slope = float(feats[1, k] - feats[0, k])
    tt = model.time_token
    tt.linear_1.weight.zero_()
    tt.linear_1.bias.zero_()
    tt.linear_1.weight[0, k] = 10.0 / slope
    tt.linear_1.bias[0] = 20.0
    tt.linear_1.bias[1] = 20.0
    tt.linear_2.weight.zero_()
    tt.linear_2.bias.zero_()
    for sign, d in ((1, T_DIM[0]), (-1, T_DIM[1])):
        tt.linear_2.weight[d, 0] = -sign * A0 / 10
        tt.linear_2.bias[d] = sign * 3 * A0
    for sign, d in ((1, M_T[0]), (-1, M_T[1])):
        tt.linear_2.weight[d, 1] = sign * MARK_T / 20

    # ---- layer 0: align, average, subtract; time copy; shrink the input marker ---------------------
    blk = model.layers[0]
    attn = blk.self_attn
    for h in range(4):
        _align_head(attn, h, rms_out, rms_in, G_ALIGN, B_INPUT, ms, M_OUT[0], M_IN[0],
                    mark_out / rms_out, MARK_IN / rms_in)
    attn.to_v.weight.zero_()
    values = E.T
    if latent_map is not None:  # E's columns are (channel, row, col), as a token map's
        m = latent_map.to(torch.float64)
        if m.shape[0] == ch:  # a map of each latent pixel's channels: the same on every pixel of the token
            m = torch.kron(m, torch.eye(p * p, dtype=torch.float64))
        values = m @ E.T
    attn.to_v.weight[:256] = f32(values)
    attn.to_out[0].weight.zero_()
    attn.to_out[0].weight[:, :256] = f32(-rms_in * E)
    if focus is None:
        _time_head(attn, 4, sizes, ms)
        _shrink_markers(blk.mlp, sizes)
        later = model.layers[1:]
    else:
        assert len(model.layers) >= 2, "the multi-focus path needs a second layer"
        _build_focus(model, focus, E, sizes, ms)
        later = model.layers[2:]

    # ---- layers ≥ 1: identity at start, head 0 aligned, content emphasised in the norms ---------------
    rms_in1 = _rms(100, 24, 2 * MARK_AFTER ** 2)
    rms_out1 = _rms(100, 24, 2 * MARK_AFTER ** 2, 2 * (A0 / 2) ** 2)
    for blk in later:
        _align_head(blk.self_attn, 0, rms_out1, rms_in1, 4.0, 10.0, ms, M_OUT[0], M_IN[0],
                    MARK_AFTER / rms_out1, MARK_AFTER / rms_in1, clear=False)
        blk.self_attn.to_out[0].weight.zero_()
        blk.mlp.down_proj.weight.zero_()
        for norm in (blk.input_layernorm, blk.post_attention_layernorm):
            norm.weight.fill_(1.0)
            norm.weight[S] = 3.0

    # ---- read-out: LayerNorm over content and T only, v = −(scale)·Eᵀ ---------------------------------
    model.norm.weight.zero_()
    model.norm.weight[S] = 1.0
    model.norm.weight[list(T_DIM)] = 1.0
    model.norm_out.linear.weight.zero_()
    model.norm_out.linear.bias.zero_()
    kappa = -math.sqrt(R2_NOMINAL + 2 * A0 ** 2) / math.sqrt(HIDDEN)
    # proj_out rows are ordered (row, col, channel) in the patch; E's columns (channel, row, col)
    w = (kappa * E.T).reshape(ch, p, p, HIDDEN).permute(1, 2, 0, 3).reshape(p * p * ch, HIDDEN)
    model.proj_out.weight.copy_(f32(w))
    model.proj_out.bias.zero_()
    return {**sizes, "kappa": kappa, "time_feature": k}

"""The selection's detail taken against each input token's smoothed neighbourhood instead of the token's own mean:
one layer inserted after the control layer (layers: 0 control, 1 neighbourhood, 2 average, 3 selection).

Why: the selection (`selection`) chooses each token's within-token detail (the token minus its own mean per
channel); an edge on a token border, or a blur wider than a token, lies partly in the token means, which it
averages (docs/notes/findings.md: on multi-focus training pairs, detail against a Gaussian of the neighbourhood
buys ≈ +0.007 Qabf at equal SSIM over detail against the block mean).

How: the selection's target is M·avg + s·Σ_k (w_k − ½)·(z_k − b_k), b_k image k's base at the token (w: its softmax
weights, Σ w_k = 1). Here b = D·z + O·q̂, q̂ the `focus_map` kernel's mean of P·z over the token's neighbourhood in
its own image, and D, P, O are fitted by least squares on training crops to the latent of the crop smoothed by a
Gaussian (`focus_map.fit_focus_map`, the band gains of that Gaussian).
Layer 1's one head: each input query averages P·z over its neighbourhood of input tokens (other queries go to
BOS, value 0) and writes q into the MIRROR dims (no layer reads them on input tokens; the values below read
MIRROR + CODE = q). Image 1's tokens see only image 1 (q_1 = q̂_1); image 2's see both (q_2 = (q̂_1 + q̂_2)/2).
That is all the selection needs: Σ_k (w_k − ½)·O q̂_k = (w_1 − ½)·O(q̂_1 − q̂_2) = Σ_k (2w_k − 1)·O q_k.
So the selection layer's values become s(I − D)·z − 2s·O·q and the averaging layer's (M − s(I − D))·z + 2s·O·q:
with equal weights the two still sum to M·avg (control prompts, gate tokens), and D = the token mean, O = 0 gives
back the selection as it was.
"""
from __future__ import annotations

import math

import torch

from .average_init import CODE, FREE, HIDDEN, M_OUT, M_T, MARGIN, MIRROR, RATIO
from .average_init import _content_basis, _kernel_slots, _marker_gain, nominal_sizes
from .constants import BAND_SIGMAS, KERNEL
from .control import slot
from .grow import insert_layer
from .selection import detail_projection

CHOSEN_ON = ("σ 4 / 8 / 16 / 32 px on the selection's training pairs (12 synthetic multi-focus, 15 train/roadscene, "
             "15 synthetic 2.5–4.5-stop exposure): 16 raises Qabf and VIF on all three and lowers no SSIM")
RANK = len(MIRROR)  # directions of the smoothed neighbourhood (the MIRROR dims hold them)


def gaussian_gains(sigma: int) -> list[float]:
    """`focus_map.band_filter` gains that turn an image into its Gaussian of ``sigma`` working px (one of
    BAND_SIGMAS): every band finer than sigma removed."""
    assert sigma in BAND_SIGMAS[1:], f"sigma must be one of {BAND_SIGMAS[1:]}"
    return [-1.0 if BAND_SIGMAS[i + 1] <= sigma else 0.0 for i in range(len(BAND_SIGMAS) - 1)]


def fit_base(vae, sources, sigma: int, crops: int = 48, seed: int = 0) -> tuple[dict, dict]:
    """D [256, 256], P [RANK, 256], O [256, RANK] with D·z + O·smooth(P·z) ≈ the latent of the crop smoothed by a
    Gaussian of ``sigma`` working px, on training crops enlarged 2× (as the pipeline enlarges inputs)."""
    from .focus_map import fit_focus_map

    zero = torch.zeros(256, 256, dtype=torch.float64)
    maps, rec = fit_focus_map(vae, sources, gaussian_gains(sigma), zero, rank=RANK, crops=crops, seed=seed)
    rec = {"sigma_px": sigma, **{k: rec[k] for k in ("rank", "crops", "size", "upscale", "seed", "kernel")},
           "relative_residual": rec["relative_residual"]}
    return maps, rec


@torch.no_grad()
def add_neighbourhood(model, maps: dict, strength: float, seed: int = 0):
    """A new transformer: ``model`` (control, average, selection) with the neighbourhood layer at index 1 and the
    averaging and selection layers' values rewritten; ``strength`` is the selection's s. The detail energy that
    decides the weights stays layer 0's, against the token mean (docs/notes/findings.md: against the
    neighbourhood it sharpens the choice along the same Qabf-for-SSIM line)."""
    E = _content_basis(seed)
    sizes = nominal_sizes()
    rms_in, n_in, n_out = sizes["rms_in"], sizes["n_in"], sizes["n_out"]
    f32 = lambda x: x.to(torch.float32)  # noqa: E731
    model = insert_layer(model, 1)
    ms = model.rope_mscale
    D, P, O = (maps[k].to(torch.float64) for k in ("D", "P", "O"))
    r = P.shape[0]
    assert r <= len(MIRROR)

    # ---- layer 1, head 0: input queries → the kernel over their neighbourhood of input tokens; others → BOS ------
    attn = model.layers[1].self_attn
    peak = _kernel_slots(attn, 0, rms_in, rms_in, ms)  # as `average_init`'s smoothing head, for input queries
    # output queries' code is RATIO× an input query's (normalised by their smaller RMS), and their own and the other
    # output tokens' keys RATIO² (2 % to spare for their RMS): BOS (key weight k_w) must beat those; the time query
    # has no code (text keys, without code, sit at 0; input keys within reach at up to +peak for input queries)
    sink = math.sqrt(HIDDEN)
    k_w = _marker_gain(MARGIN, n_in, sink, ms)
    b_out = 1.02 * RATIO ** 2 * peak + MARGIN
    slot(attn, 0, 4 * len(KERNEL), {M_OUT[0]: k_w * (b_out / MARGIN) * (n_in / n_out), M_T[0]: k_w}, {FREE[0]: k_w})
    attn.to_v.weight[:r] = f32(P @ E.T)
    attn.to_out[0].weight[MIRROR[:r], :r] = f32(rms_in * torch.eye(r, dtype=torch.float64))

    # ---- layers 2 (average) and 3 (selection): the detail against the neighbourhood ------------------------------
    s = strength
    was = detail_projection(s)                     # s(I − token mean), what the values hold now
    now = s * (torch.eye(256, dtype=torch.float64) - D)
    for layer, sign in ((model.layers[2], -1.0), (model.layers[3], 1.0)):
        v = layer.self_attn.to_v.weight
        v[:256] += f32(sign * (now - was) @ E.T)
        for j in range(r):                         # q_j = MIRROR_j + CODE_j
            for d in (MIRROR[j], CODE[j]):
                v[:256, d] += f32(-sign * 2 * s * O[:, j])
    return model


def main(argv=None) -> int:
    """Take the selection's detail against each token's smoothed neighbourhood, in a built model folder that selects
    and weighs exposure (made with --control, --selection and --exposure), in place."""
    from ditfuse_core.training import m3

    from .folder_edit import edit_main

    def options(ap):
        ap.add_argument("--sigma", type=int, default=16, help="the neighbourhood's Gaussian in working px (one of "
                        f"{BAND_SIGMAS[1:]}; chosen on training pairs: 16)")
        ap.add_argument("--data", default=None, help="training images (default: the build's, .devdata/pack)")

    def apply(a, folder, tr, model, vae):
        if a.data is None:
            from tools.build_default_model import _data_root

            a.data = _data_root(None)
        maps, rec = fit_base(vae, m3.scan_sources(a.data), a.sigma)
        model = add_neighbourhood(model, maps, tr["selection"]["strength"])
        return model, {**rec, "layer": 1, "chosen_on": CHOSEN_ON}

    return edit_main(argv, main.__doc__, "neighbourhood", "exposure", "the neighbourhood layer goes in after the "
                     "selection and the exposure weighting: add them first", options, apply)


if __name__ == "__main__":
    raise SystemExit(main())

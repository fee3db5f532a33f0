"""The bundled model selects on multi-focus and infrared-visible prompts (#25): more edge transfer than averaging
at an SSIM close to it, and no selection for control prompts (their gate tokens give equal weights; exposure
prompts weigh by exposure: tests/test_bundled_exposure.py)."""
import numpy as np
import pytest
from PIL import Image

from ditfuse_core import examples
from ditfuse_core.metrics.registry import METRICS
from bundled_pipes import bundled_pipe, equal_weights, gray

SIDE = dict(max_side=512, min_scale=1.0)


@pytest.fixture(scope="module")
def pipes():
    pipe = bundled_pipe()
    return pipe, equal_weights(pipe)


def _scores(a, b, f):
    a, b, f = gray(a), gray(b), np.round(gray(f))
    return METRICS["Qabf"].fn(a, b, f), METRICS["SSIM"].fn(a, b, f)


@pytest.mark.parametrize("task", ["mff", "ivif"])
def test_multi_focus_and_infrared_visible_prompts_select(pipes, task):
    pipe, plain = pipes
    a, b = [Image.open(p).convert("RGB") for p in examples.pair_paths(task)]
    b = b.resize(a.size)
    q_sel, s_sel = _scores(a, b, pipe.fuse(a, b, task=task)[0])  # the model's working size
    q_avg, s_avg = _scores(a, b, plain.fuse(a, b, task=task)[0])
    assert q_sel > q_avg + 0.02, (q_sel, q_avg)
    assert s_sel > s_avg - 0.01, (s_sel, s_avg)


@pytest.mark.parametrize("task", ["ivif", "mef"])
def test_control_prompts_do_not_select(pipes, task):
    pipe, plain = pipes
    a, b = [Image.open(p) for p in examples.pair_paths(task)]
    # the gate cancels the activity logit up to the fp16 rounding of the stored weights: ≤ 1 level of 255
    x, y = (np.asarray(p.control(a, b, adjustment="LIGHT+", **SIDE)[0], np.int16) for p in (pipe, plain))
    assert np.abs(x - y).max() <= 1 and np.mean(x != y) < 0.01


def test_multi_focus_activity_ignores_a_blurred_ramp_infrared_visible_counts_it(pipes):
    """tools/bundled/focus_energy.py: on multi-focus prompts the detail energy is counted without each token's planar
    trend (twice), so a blurred edge's gentle ramp is no activity; infrared-visible prompts keep the plain detail
    energy. Image 1 is a smooth ramp, image 2 fine texture on grey; the energies are read off layer 0's output and
    checked against their definition on each input token's latent (fine / planar parts of its detail)."""
    import torch

    from bundled_pipes import layer_io
    from tools.bundled.average_init import M_IN, S, _content_basis
    from tools.bundled.focus_energy import split_directions
    from tools.bundled.selection import ALPHA, E_DIM

    pipe, _ = pipes
    side = 256
    ramp = np.tile(np.linspace(40, 215, side), (side, 1))
    signs = np.sign(np.random.default_rng(0).standard_normal((side // 4, side // 4)))
    texture = 128 + 30 * signs.repeat(4, 0).repeat(4, 1)
    a, b = (Image.fromarray(np.repeat(x[..., None], 3, 2).round().astype(np.uint8)) for x in (ramp, texture))
    E, (fine, planar) = _content_basis(0), split_directions()
    got = {}
    for task in ("mff", "ivif"):
        x_in, x_out = layer_io(pipe, 0, lambda: pipe.fuse(a, b, task=task, max_side=side, min_scale=1.0))
        inputs = (x_in[:, M_IN[0]] > 1000).nonzero().flatten()
        z = x_in[inputs][:, S] @ E[S]
        f, p = (ALPHA * ((z @ h.T) ** 2).sum(1) for h in (fine, planar))
        got[task] = x_out[inputs, E_DIM], f, p
    e, f, p = got["mff"]
    assert torch.allclose(e, 2 * f, rtol=0.02, atol=1e-6)
    e, f, p = got["ivif"]
    assert torch.allclose(e, f + p, rtol=0.02, atol=1e-6)
    n = len(e) // 2  # image 1's tokens: the ramp is planar, no fine detail
    assert float(got["mff"][0][:n].median()) < 0.01 * float(got["ivif"][0][:n].median())

"""The bundled model's neighbourhood layer (tools/bundled/neighbourhood.py, #25): each input token gets the kernel
mean of its neighbourhood (image 1's within image 1, image 2's over both images, which is all the selection needs),
and prompts that do not select still get the plain average."""
import numpy as np
import pytest
import torch
from PIL import Image

from ditfuse_core import examples
from bundled_pipes import bundled_pipe, equal_weights, layer_io, twin
from tools.bundled.average_init import CODE, M_IN, MIRROR, S, _content_basis
from tools.bundled.focus_map import smooth_tokens

SIDE = dict(max_side=256, min_scale=1.0)


@pytest.fixture(scope="module")
def pipe():
    return bundled_pipe()


def _without_neighbourhood(pipe):
    """The same model with the neighbourhood layer's head taken out (q = 0 on every token; heads 1–3: warm.py)."""
    return twin(pipe, lambda t: t.layers[1].self_attn.to_out[0].weight[:, :64].zero_())


def test_input_tokens_hold_their_neighbourhood_mean(pipe):
    layer = pipe.transformer.layers[1]
    a, b = [Image.open(p) for p in examples.pair_paths("mff")]
    x_in, x_out = layer_io(pipe, 1, lambda: pipe.fuse(a, b, task="mff", **SIDE))
    inputs = (x_in[:, M_IN[0]] > 1000).nonzero().flatten()  # the input tokens' marker
    n = len(inputs) // 2
    rows = torch.asin(x_in[inputs[:n], CODE[10]].clamp(-1, 1)) * 64 / torch.pi  # sin of the slowest row frequency
    width = int((rows.round() == 0).sum())
    E = _content_basis(0)
    v = layer.self_attn.to_v.weight[:64].double()                 # head 0 (heads 1–3: tools/bundled/warm.py)
    r = int((v.abs().sum(1) > 0).sum())
    P = v[:r] @ E                                            # the head's values are P·z
    z = x_in[inputs][:, S] @ E[S]                            # each token's latent (256, E's orthonormal columns)
    q = x_out[inputs][:, MIRROR[:r]] + x_out[inputs][:, CODE[:r]]
    grids = [(z[k * n:(k + 1) * n] @ P.T).T.reshape(1, r, -1, width) for k in range(2)]
    own = [smooth_tokens(g)[0].reshape(r, -1).T for g in grids]
    scale = own[0].abs().max()
    assert (q[:n] - own[0]).abs().max() < 0.01 * scale                     # image 1: its own neighbourhood
    assert (q[n:] - (own[0] + own[1]) / 2).abs().max() < 0.01 * scale      # image 2: both images'
    assert (own[0] - own[1]).abs().max() > 0.1 * scale                     # (which differ)


@pytest.mark.parametrize("task", ["mff", "ivif", "mef"])
def test_with_equal_weights_the_neighbourhood_cancels(pipe, task):
    """The averaging layer adds what the selection layer takes away when the weights are equal (control prompts,
    and any prompt with the activity logit removed): the neighbourhood's terms cancel to within 1 level of 255.
    Not to the last bit: "equal" weights differ by ~1e-3 where the two inputs' RMS differ (their content rides on
    the huge input marker), which leaves ~1e-3 of the two bases' difference, a systematic 0.1 level on the
    example exposure pair."""
    a, b = [Image.open(p) for p in examples.pair_paths(task)]
    plain = equal_weights(pipe)
    x, y = (np.asarray(p.fuse(a, b, task=task, **SIDE)[0], np.int16) for p in (plain, _without_neighbourhood(plain)))
    assert np.abs(x - y).max() <= 1 and abs(np.mean(x - y)) < 0.2
    # and with the selection's weights it changes the fusion
    z = np.asarray(pipe.fuse(a, b, task=task, **SIDE)[0], np.int16)
    w = np.asarray(_without_neighbourhood(pipe).fuse(a, b, task=task, **SIDE)[0], np.int16)
    assert np.abs(z - w).max() > 2

"""The bundled model's warm targets (tools/bundled/warm.py, #25): with the authors' IVIF preset "Keep the warm
targets of the infrared image bright …" the infrared-warm regions come out at the infrared image's brightness; the
standard prompt and other tasks are unchanged."""
import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from ditfuse_core import examples, prompts
from bundled_pipes import bundled_pipe, gray, layer_io, twin
from tools.bundled.average_init import M_IN
from tools.bundled.warm import ID_DIR, ID_VAL

WARM = prompts.PRESETS["ivif"][1]
SIDE = dict(max_side=512, min_scale=1.0)


@pytest.fixture(scope="module")
def pipe():
    return bundled_pipe()


@pytest.fixture(scope="module")
def ivif(pipe):
    vis, ir = [Image.open(p) for p in examples.pair_paths("ivif")]
    std, warm = (pipe.fuse(vis, ir, task="ivif", instruction=i, **SIDE)[0] for i in ("", WARM))
    return gray(vis), gray(ir), gray(std), gray(warm)


def _without_warm(pipe):
    """The same model with the warm pieces taken out (layer 0's head 1, layer 1's heads 1–3 and MLP)."""
    def edit(t):
        t.layers[0].self_attn.to_out[0].weight[:, 64:128] = 0
        t.layers[1].self_attn.to_out[0].weight[:, 64:256] = 0
        t.layers[1].mlp.down_proj.weight.zero_()

    return twin(pipe, edit)


def test_warm_preset_brings_warm_regions_to_infrared_brightness(ivif):
    vis, ir, std, warm = ivif
    base = lambda x: ndimage.gaussian_filter(x, 4)  # noqa: E731
    hot = base(ir) - base(vis) > 60                  # the astronaut: infrared far above the visible picture
    cold = base(ir) - base(vis) < -10
    assert hot.mean() > 0.2 and cold.mean() > 0.05
    target = base(ir)[hot].mean()
    assert abs(base(std)[hot].mean() - target) > 40             # the standard prompt: about half way
    assert abs(base(warm)[hot].mean() - target) < 0.05 * target  # the warm preset: the infrared's brightness
    assert abs((warm - std)[cold].mean()) < 2  # where the infrared is darker: SiLU's negative lobe only (≈ −0.3…−1.7)
    # over the fusion's texture: the warm result keeps the standard fusion's detail in the warm regions
    detail = lambda x: x - base(x)  # noqa: E731
    assert np.corrcoef(detail(warm)[hot], detail(std)[hot])[0, 1] > 0.8


@pytest.mark.parametrize("task", ["ivif", "mff", "mef"])
def test_other_prompts_are_unchanged(pipe, task):
    """Rounding only (measured: max 1 level, mean 0.03)."""
    a, b = [Image.open(p) for p in examples.pair_paths(task)]
    x, y = (np.asarray(p.fuse(a, b, task=task, **SIDE)[0], np.int16) for p in (pipe, _without_warm(pipe)))
    assert np.abs(x - y).max() <= 1 and np.abs(x - y).mean() < 0.1


def test_input_tokens_know_their_image(pipe):
    """Layer 0's head 1: image 1's tokens see one aligned input token beside BOS (½ of its value), image 2's two (⅓)."""
    a, b = [Image.open(p) for p in examples.pair_paths("ivif")]
    x_in, x_out = layer_io(pipe, 0, lambda: pipe.fuse(a, b, task="ivif", **SIDE))
    inputs = (x_in[:, M_IN[0]] > 1000).nonzero().flatten()
    n = len(inputs) // 2
    ident = (x_out[inputs] - x_in[inputs]) @ ID_DIR
    assert (ident[:n] - ID_VAL / 2).abs().max() < 0.001 and (ident[n:] - ID_VAL / 3).abs().max() < 0.001

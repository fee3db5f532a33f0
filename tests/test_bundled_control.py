"""The bundled model answers `[CONTROL]` prompts (#25): brightness by the amounts in its ditfuse.json, contrast
up and down, and fusions exactly as without its control layer."""
import json

import numpy as np
import pytest
from PIL import Image

from ditfuse_core import examples
from ditfuse_core.pipeline import model_folder
from bundled_pipes import bundled_pipe, equal_weights, twin

SIDE = dict(max_side=256, min_scale=1.0)  # small working size: the amounts do not depend on it


@pytest.fixture(scope="module")
def pipe():
    return bundled_pipe()


@pytest.fixture(scope="module")
def equal(pipe):
    """The equal-weight fusion that a control prompt adjusts (its tag switches the selection off)."""
    return equal_weights(pipe)


@pytest.fixture(scope="module")
def amounts(pipe):
    meta = json.loads((model_folder(None) / "ditfuse.json").read_text())
    return meta["training"]["transformer"]["control"]["amounts"]


def _rgb(img):
    return np.asarray(img.convert("RGB"), np.float64) / 255.0


def _stats(rgb):
    y = rgb @ np.array([0.299, 0.587, 0.114])
    return y.mean(), y.std()


@pytest.mark.parametrize("task", ["ivif", "mff", "mef"])
def test_light_and_contrast_move_each_example_by_the_documented_amounts(pipe, equal, amounts, task):
    a, b = [Image.open(p) for p in examples.pair_paths(task)]
    fused = _rgb(equal.fuse(a, b, task=task, **SIDE)[0])
    m0, s0 = _stats(fused)
    got = {adj: _stats(_rgb(pipe.control(a, b, adjustment=adj, **SIDE)[0])) for adj in amounts}
    for adj in ("LIGHT+", "LIGHT-"):
        assert got[adj][0] - m0 == pytest.approx(amounts[adj], rel=0.2), (adj, got[adj][0] - m0)
    # the strong levels clip more on dark or bright images: their direction and more than the mild level
    assert got["LIGHT++"][0] - m0 > got["LIGHT+"][0] - m0 + 0.05
    assert got["LIGHT--"][0] - m0 < got["LIGHT-"][0] - m0 - 0.03
    assert got["CONTRAST+"][1] / s0 > 1.2
    assert got["CONTRAST-"][1] / s0 < 0.7
    # brightness is a level shift: the fusion moved by the amount and clipped to 0..1 (which is all that lowers the
    # contrast: the dark IVIF pair loses a quarter of its standard deviation under LIGHT--)
    for adj in ("LIGHT+", "LIGHT-", "LIGHT++", "LIGHT--"):
        m, s = _stats(np.clip(fused + amounts[adj], 0.0, 1.0))
        assert got[adj][0] == pytest.approx(m, abs=0.005), adj
        assert got[adj][1] / s == pytest.approx(1.0, abs=0.02), adj


def test_without_a_control_subtag_the_control_layer_adds_nothing(pipe):
    from tools.bundled import control

    a, b = [Image.open(p) for p in examples.pair_paths("ivif")]
    def edit(t):  # the control flags and units taken out (the head's value rows 0–4; 5 and 6 carry the exposure
        t.layers[0].self_attn.to_out[0].weight[:, :5] = 0  # and IVIF subtags' flags)
        t.layers[0].mlp.down_proj.weight[:, :control.UNITS] = 0

    plain = twin(pipe, edit)
    for task in ("ivif", "mff"):
        with_layer = np.asarray(pipe.fuse(a, b, task=task, **SIDE)[0])
        without = np.asarray(plain.fuse(a, b, task=task, **SIDE)[0])
        assert np.array_equal(with_layer, without), task
    # and with one it does something
    assert not np.array_equal(np.asarray(pipe.control(a, b, adjustment="LIGHT+", **SIDE)[0]),
                              np.asarray(plain.control(a, b, adjustment="LIGHT+", **SIDE)[0]))

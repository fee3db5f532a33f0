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

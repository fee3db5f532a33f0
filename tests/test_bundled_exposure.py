"""The bundled model weighs exposure pairs by exposure (#25): on `<MULTI-EXPOSURE>` prompts each token takes more
of the better-exposed input, on multi-focus prompts more of the one with more detail, and other prompts are as
before (tests/test_bundled_selection.py checks IVIF and control against equal weights)."""
import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from ditfuse_core import examples
from ditfuse_core.metrics.registry import METRICS
from bundled_pipes import bundled_pipe, equal_weights, gray

SIDE = dict(max_side=512, min_scale=1.0)


@pytest.fixture(scope="module")
def pipes():
    pipe = bundled_pipe()
    return pipe, equal_weights(pipe)


def _detail(x):
    return x - ndimage.gaussian_filter(x, 4)


def _texture(rng, side):
    return ndimage.gaussian_filter(rng.standard_normal((side, side)), 1.5)


def _weights(fused, a, b):
    """Least-squares c1, c2 in detail(fused) ≈ c1·detail(a) + c2·detail(b)."""
    da, db, df = (_detail(gray(x)).ravel() for x in (a, b, fused))
    return np.linalg.lstsq(np.stack([da, db], 1), df, rcond=None)[0]


def test_exposure_prompts_take_the_well_exposed_input_and_multi_focus_the_detailed_one(pipes):
    """Image 1 is mid-grey with fine texture, image 2 bright (mean 0.85) with stronger texture of its own:
    exposure weighting favours image 1's detail, detail energy image 2's."""
    pipe, plain = pipes
    rng = np.random.default_rng(0)
    t1, t2 = _texture(rng, 256), _texture(rng, 256)
    one = np.clip(0.5 + 0.08 * t1 / t1.std(), 0, 1)
    two = np.clip(0.85 + 0.12 * t2 / t2.std(), 0, 1)
    a, b = (Image.fromarray((np.repeat(x[..., None], 3, 2) * 255).round().astype(np.uint8)) for x in (one, two))
    ratio = {}
    for name, p, task in (("mef", pipe, "mef"), ("mff", pipe, "mff"), ("equal", plain, "mef")):
        c1, c2 = _weights(p.fuse(a, b, task=task, **SIDE)[0], a, b)
        ratio[name] = c1 / c2
    assert ratio["mef"] > 1.1 * ratio["equal"], ratio
    assert ratio["mff"] < ratio["equal"] / 1.1, ratio


def test_exposure_fusion_of_the_example_pair(pipes):
    """The example pair is mildly exposed (Qabf +0.001 here): no loss against equal weights, SSIM within 0.01."""
    pipe, plain = pipes
    a, b = [Image.open(p).convert("RGB") for p in examples.pair_paths("mef")]
    b = b.resize(a.size)
    scores = {}
    for name, p in (("exposure", pipe), ("equal", plain)):
        f = np.round(gray(p.fuse(a, b, task="mef")[0]))  # the model's working size
        scores[name] = [METRICS[m].fn(gray(a), gray(b), f) for m in ("Qabf", "SSIM")]
    assert scores["exposure"][0] > scores["equal"][0], scores
    assert scores["exposure"][1] > scores["equal"][1] - 0.01, scores

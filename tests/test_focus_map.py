"""The multi-focus filter of the constructed model: fitted across tokens, switched on and off by the prompt."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pathlib import Path

import numpy as np
import pytest
import torch

from ditfuse_core import prompts, vae as vae_mod
from ditfuse_core.training import m3
from ditfuse_core.pipeline import BUNDLED_MODEL
from ditfuse_core.sequence import build_branch
from ditfuse_core.tokenizer import load_tokenizer
from tools.bundled import average_init, focus_map
from ditfuse_core.transformer import DiTFuseTransformer

EXAMPLES = Path(__file__).resolve().parents[1] / "example_images"
N = 256  # token dims: 16 channels × 4 × 4


def _euler4(model, task, c1, c2, seed=9):
    n = c1.shape[2] * c1.shape[3] // 16
    branch = build_branch(load_tokenizer(), prompts.wrap(prompts.fusion_prompt(task)), [n, n])
    x = torch.randn(c1.shape, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        for i in range(4):
            x = x + model.forward_branch(x, torch.tensor([i / 4]), branch, [c1, c2]) / 4
    return x


@pytest.fixture(scope="module")
def models():
    """A 2-layer construction with a random detail map and random focus maps, and the 1-layer one without."""
    g = torch.Generator().manual_seed(3)
    rnd = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    m = torch.eye(N, dtype=torch.float64) + 0.003 * rnd(N, N)
    focus = {"D": 0.006 * rnd(N, N), "P": torch.linalg.qr(rnd(N, 64))[0].T, "O": 0.04 * rnd(N, 64),
             "gate_ids": focus_map.gate_token_ids(load_tokenizer())}
    torch.manual_seed(0)
    two = DiTFuseTransformer(**average_init.config(layers=2, intermediate=64)).eval()
    average_init.init_average(two, latent_map=m, focus=focus)
    torch.manual_seed(0)
    one = DiTFuseTransformer(**average_init.config(layers=1, intermediate=64)).eval()
    average_init.init_average(one, latent_map=m)
    c1 = torch.randn(1, 16, 24, 32, generator=g).float() * 0.7
    c2 = torch.randn(1, 16, 24, 32, generator=g).float() * 1.3 + 0.2
    return two, one, m, focus, c1, c2


def _mapped(m, c):
    t = focus_map.token_grid(c.double(), 4)
    y = torch.einsum("of,bfhw->bohw", m, t)
    return torch.nn.functional.fold(y.flatten(2), c.shape[2:], 4, stride=4).float()


def _rel(a, b) -> float:
    return float((a - b).norm() / b.norm())


def test_the_prompt_switches_the_filter_on_for_multi_focus_pairs_only(models):
    two, one, m, focus, c1, c2 = models
    c = (c1 + c2) / 2
    base = _mapped(m, c)
    with_filter = base + focus_map.apply(focus, c, 4)
    assert _rel(with_filter, base) > 0.05  # the filter is visible at this size
    assert _rel(_euler4(two, "mff", c1, c2), with_filter) < 0.005
    for task in ("ivif", "mef"):
        assert _rel(_euler4(two, task, c1, c2), base) < 0.005


def test_without_the_filter_the_two_layer_model_is_the_one_layer_model(models):
    """IVIF/MEF fusions of the bundled model must not move when the multi-focus path is added."""
    two, one, *_, c1, c2 = models
    for task in ("ivif", "mef"):
        assert torch.allclose(_euler4(two, task, c1, c2), _euler4(one, task, c1, c2), atol=1e-6)


def test_gate_tokens_are_in_every_other_task_prompt_and_in_no_multi_focus_prompt():
    tok = load_tokenizer()
    ids = set(focus_map.gate_token_ids(tok))
    assert len(ids) == 4
    mff = prompts.fusion_prompt("mff", "keep the sharp regions of both images")
    assert not ids & set(tok.encode(prompts.wrap(mff)))
    for text in (prompts.fusion_prompt("ivif"), prompts.fusion_prompt("mef"), prompts.control_prompt("CONTRAST-"),
                 prompts.segmentation_prompt("tree")):
        assert ids & set(tok.encode(prompts.wrap(text)))


def test_the_smoothing_kernel_is_a_one_token_gaussian_and_local():
    k = focus_map.token_kernel(128)[0]
    d = torch.arange(4, dtype=torch.float64)
    assert torch.allclose(k[:4], torch.exp(-d ** 2 / 2), atol=0.02)
    assert float(k[8:121].max()) < 1e-11  # the position code repeats after 128 tokens: offsets ≥ 121 alias
    assert focus_map.kernel_sigma() == pytest.approx(1.0, abs=0.01)


def test_the_fitted_filter_moves_latents_towards_the_band_filtered_crops():
    sources = [m3.Source(image=str(p)) for p in sorted(EXAMPLES.glob("*.png"))]
    vae = vae_mod.load_vae(BUNDLED_MODEL / "vae", torch.float32, "cpu")
    eye = torch.eye(N, dtype=torch.float64)
    gains = [0.3, -0.3, 0.1, 0.1, 0.05, 0.0]
    focus, rec = focus_map.fit_focus_map(vae, sources, gains, eye, crops=4, size=256)
    assert focus["D"].shape == (N, N) and focus["P"].shape == (64, N) and focus["O"].shape == (N, 64)
    assert rec["relative_residual_of_filter"] < 0.5
    none, rec0 = focus_map.fit_focus_map(vae, sources, [0.0] * 6, eye, crops=2, size=256)
    assert rec0["relative_residual"] < 1e-6 and float(none["D"].abs().max()) < 1e-6
    x = np.random.default_rng(0).uniform(0, 255, (32, 32, 3))
    assert np.allclose(focus_map.band_filter(x, [0.0] * 6), x)

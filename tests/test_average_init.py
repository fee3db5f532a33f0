"""The constructed starting point of the bundled model computes the straight flow to the input average."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

from ditfuse_core import prompts
from ditfuse_core.sequence import build_branch
from ditfuse_core.tokenizer import load_tokenizer
from tools.bundled import average_init
from tools.bundled.constants import GRID
from ditfuse_core.transformer import DiTFuseTransformer


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = DiTFuseTransformer(**average_init.config(layers=2, intermediate=64)).eval()
    average_init.init_average(model)
    g = torch.Generator().manual_seed(1)
    # different energies: equal attention weights must not depend on the content
    c1 = torch.randn(1, 16, 24, 32, generator=g) * 0.7
    c2 = torch.randn(1, 16, 24, 32, generator=g) * 1.3 + 0.2
    n = (24 // 4) * (32 // 4)
    branch = build_branch(load_tokenizer(), prompts.wrap(prompts.fusion_prompt("ivif")), [n, n])
    return model, c1, c2, branch, g


def _euler4(model, branch, c1, c2, x):
    """Four Euler steps of the constructed flow from noise x, conditioned on latents c1, c2."""
    with torch.no_grad():
        for i in range(4):
            x = x + model.forward_branch(x, torch.tensor([i / 4]), branch, [c1, c2]) / 4
    return x


def _worst_token_error(x, c) -> float:
    """Largest per-token (4 × 4 latent pixels) distance |x − c|, relative to that token's |c|."""
    pool = lambda y: torch.nn.functional.avg_pool2d(y.pow(2).sum(1, keepdim=True), 4).sqrt()  # noqa: E731
    return float((pool(x - c) / pool(c)).max())


@pytest.mark.parametrize("t", [0.0, 0.4, 0.9])
def test_velocity_points_at_the_average(setup, t):
    model, c1, c2, branch, g = setup
    c = (c1 + c2) / 2
    xt = t * c + (1 - t) * torch.randn(c.shape, generator=g)
    with torch.no_grad():
        v = model.forward_branch(xt, torch.tensor([t]), branch, [c1, c2])
    want = (c - xt) / (1 - t)
    assert float((v - want).norm() / want.norm()) < 0.01


def test_both_images_weigh_the_same_and_euler_lands_on_the_average(setup):
    model, c1, c2, branch, g = setup
    c = (c1 + c2) / 2
    x = torch.randn(c.shape, generator=g)
    steps = 6
    with torch.no_grad():
        for i in range(steps):
            x = x + model.forward_branch(x, torch.tensor([i / steps]), branch, [c1, c2]) / steps
    sol = torch.linalg.lstsq(torch.stack([c1.flatten(), c2.flatten()], 1), x.flatten()[:, None]).solution.flatten()
    assert abs(float(sol[0]) - 0.5) < 0.005 and abs(float(sol[1]) - 0.5) < 0.005
    assert float((x - c).norm() / c.norm()) < 0.01


def test_frozen_names_exist(setup):
    model = setup[0]
    names = [n for n, _ in model.named_parameters()]
    for prefix in average_init.FROZEN:
        assert any(n.startswith(prefix) for n in names), prefix
    assert not any(n.startswith("norm.") for n in names if n.startswith("norm_out"))


def _on_pixels(m, c):
    return torch.einsum("ij,bjhw->bihw", m, c)


def _on_tokens(m, c):
    tokens = torch.nn.functional.unfold(c, 4, stride=4)[0]
    return torch.nn.functional.fold((m @ tokens)[None], c.shape[-2:], 4, stride=4)


@pytest.mark.parametrize("n, apply", [(16, _on_pixels), (256, _on_tokens)], ids=["per latent pixel", "per token"])
def test_a_latent_map_moves_the_target_to_the_mapped_average(setup, n, apply):
    """M acts on each latent pixel's channels, or on each token's 4 × 4 latent pixels (the bundled detail map)."""
    _, c1, c2, branch, g = setup
    torch.manual_seed(0)
    model = DiTFuseTransformer(**average_init.config(layers=1, intermediate=64)).eval()
    m = torch.eye(n) + 0.4 / n ** 0.5 * torch.randn(n, n, generator=g)
    average_init.init_average(model, latent_map=m)
    c = apply(m, (c1 + c2) / 2)
    x = _euler4(model, branch, c1, c2, torch.randn(c.shape, generator=g))
    assert float((x - c).norm() / c.norm()) < 0.01


def test_bright_tokens_land_on_the_average_too(setup):
    """Saturated regions of real images have latent RMS ≈ 4 (|c|² ≈ 4000 per token, 10× the nominal): the
    time channel must outweigh that, or Euler's last step keeps a few per cent of their noise."""
    model, c1, c2, branch, g = setup
    c1, c2 = c1.clone(), c2.clone()
    c1[..., :8, :8] = 4.0 + 0.3 * torch.randn(1, 16, 8, 8, generator=g)
    c2[..., :8, :8] = 3.5 + 0.3 * torch.randn(1, 16, 8, 8, generator=g)
    c = (c1 + c2) / 2
    x = _euler4(model, branch, c1, c2, torch.randn(c.shape, generator=g))
    assert _worst_token_error(x, c) < 0.005


@pytest.mark.parametrize("shape", [(4 * 128, 8), (8, 4 * 128)])
def test_every_token_of_the_largest_grid_finds_its_own_position(shape):
    """The bundled model works at up to 2048 px (128 tokens of 16 px a side): the position code has to tell
    all 128 tokens of a row or column apart, or an output token would average the wrong input tokens."""
    torch.manual_seed(0)
    model = DiTFuseTransformer(**average_init.config(layers=1, intermediate=64)).eval()
    assert model.config.pos_embed_max_size == GRID == 128
    average_init.init_average(model)
    g = torch.Generator().manual_seed(5)
    c1, c2 = (torch.randn(1, 16, *shape, generator=g) for _ in range(2))
    n = shape[0] * shape[1] // 16
    branch = build_branch(load_tokenizer(), prompts.wrap(prompts.fusion_prompt("mef")), [n, n])
    c = (c1 + c2) / 2
    x = _euler4(model, branch, c1, c2, torch.randn(c.shape, generator=g))
    assert _worst_token_error(x, c) < 0.01

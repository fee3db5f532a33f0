"""The detail map: a linear map of each token's latent (or of each latent pixel) fitted so that the bundled
autoencoder decodes unsharp-masked images."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ditfuse_core import vae as vae_mod
from ditfuse_core.training import m3
from ditfuse_core.pipeline import BUNDLED_MODEL
from ditfuse_core.training.data import ImageCrops, to_uint8
from tools.bundled.detail_map import fit_detail_map, unsharp

EXAMPLES = Path(__file__).resolve().parents[1] / "example_images"


@pytest.fixture(scope="module")
def vae_and_sources():
    sources = [m3.Source(image=str(p)) for p in sorted(EXAMPLES.glob("*.png"))]
    return vae_mod.load_vae(BUNDLED_MODEL / "vae", torch.float32, "cpu"), sources


@pytest.mark.parametrize("patch, size", [(1, 64), (4, 256)])
def test_no_sharpening_fits_the_identity(vae_and_sources, patch, size):
    vae, sources = vae_and_sources
    m, rec = fit_detail_map(vae, sources, amount=0.0, patch=patch, crops=3, size=size)  # ≥ 256 tokens for 4
    assert m.shape == (16 * patch * patch,) * 2
    assert torch.allclose(m, torch.eye(m.shape[0], dtype=m.dtype), atol=1e-6)
    assert rec["relative_residual"] < 1e-6


def _apply(m: torch.Tensor, z: torch.Tensor, patch: int) -> torch.Tensor:
    """M on every token (patch × patch latent pixels, flattened (channel, row, col)) of z."""
    tokens = F.unfold(z, patch, stride=patch)[0]
    return F.fold((m.float() @ tokens)[None], z.shape[-2:], patch, stride=patch)


@pytest.mark.parametrize("patch", [1, 4])
def test_the_mapped_latent_moves_the_decoded_image_towards_unsharp_masking(vae_and_sources, patch):
    vae, sources = vae_and_sources
    m, rec = fit_detail_map(vae, sources, sigma=2.0, amount=0.5, patch=patch, crops=6, size=128)
    assert rec["relative_residual"] < 0.9
    held_out = iter(ImageCrops(sources, size=128, seed=99, p_degraded=0.0, upscale=(2.0, 2.0)))
    detail = lambda a: a - unsharp(a, 2.0, -1.0)  # noqa: E731  (amount −1: the Gaussian blur)
    for _ in range(3):
        x = next(held_out)[None]
        img = to_uint8(x[0]).astype(np.float64)
        with torch.no_grad():
            z = vae_mod.encode(vae, x, sample=False)
            plain, mapped = (to_uint8(vae_mod.decode(vae, lat)[0]).astype(np.float64)
                             for lat in (z, _apply(m, z, patch)))
        moved, wanted = (mapped - plain).ravel(), (unsharp(img, 2.0, 0.5) - img).ravel()
        assert np.dot(moved, wanted) / (np.linalg.norm(moved) * np.linalg.norm(wanted)) > 0.2
        assert np.mean(detail(mapped) ** 2) > np.mean(detail(plain) ** 2)


def test_a_token_map_follows_unsharp_masking_more_closely_than_a_pixel_map(vae_and_sources):
    """A latent pixel of the linear autoencoder is one 4 × 4 block: only a map across the token's blocks can
    sharpen across block borders."""
    vae, sources = vae_and_sources
    res = [fit_detail_map(vae, sources, sigma=4.0, amount=0.3, patch=p, crops=6, size=128)[1]["relative_residual"]
           for p in (1, 4)]
    assert res[1] < 0.5 * res[0]

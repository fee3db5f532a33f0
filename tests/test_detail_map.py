"""The detail map: a per-latent-pixel linear map fitted so that the bundled VAE decodes unsharp-masked images."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pathlib import Path

import numpy as np
import pytest
import torch

from ditfuse_core import m3, vae as vae_mod
from ditfuse_core.pipeline import BUNDLED_MODEL
from ditfuse_core.training.data import ImageCrops, to_uint8
from ditfuse_core.training.detail_map import fit_detail_map, unsharp

EXAMPLES = Path(__file__).resolve().parents[1] / "example_images"


@pytest.fixture(scope="module")
def vae_and_sources():
    from diffusers import AutoencoderKL

    sources = [m3.Source(image=str(p)) for p in sorted(EXAMPLES.glob("*.png"))]
    return AutoencoderKL.from_pretrained(str(BUNDLED_MODEL / "vae")).eval(), sources


def test_no_sharpening_fits_the_identity(vae_and_sources):
    vae, sources = vae_and_sources
    m, rec = fit_detail_map(vae, sources, amount=0.0, crops=3, size=64)
    assert torch.allclose(m, torch.eye(m.shape[0], dtype=m.dtype), atol=1e-6)
    assert rec["relative_residual"] < 1e-6


def test_the_mapped_latent_moves_the_decoded_image_towards_unsharp_masking(vae_and_sources):
    vae, sources = vae_and_sources
    m, rec = fit_detail_map(vae, sources, sigma=2.0, amount=0.5, crops=6, size=128)
    assert rec["relative_residual"] < 0.9
    held_out = iter(ImageCrops(sources, size=128, seed=99, p_degraded=0.0, upscale=(2.0, 2.0)))
    detail = lambda a: a - unsharp(a, 2.0, -1.0)  # noqa: E731  (amount −1: the Gaussian blur)
    for _ in range(3):
        x = next(held_out)[None]
        img = to_uint8(x[0]).astype(np.float64)
        with torch.no_grad():
            z = vae_mod.encode(vae, x, sample=False)
            plain, mapped = (to_uint8(vae_mod.decode(vae, lat)[0]).astype(np.float64)
                             for lat in (z, torch.einsum("ij,bjhw->bihw", m.float(), z)))
        moved, wanted = (mapped - plain).ravel(), (unsharp(img, 2.0, 0.5) - img).ravel()
        assert np.dot(moved, wanted) / (np.linalg.norm(moved) * np.linalg.norm(wanted)) > 0.2
        assert np.mean(detail(mapped) ** 2) > np.mean(detail(plain) ** 2)

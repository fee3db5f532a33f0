"""The bundled model's linear autoencoder: nearly lossless at the working size, linear, AutoencoderKL's interface."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pathlib import Path

import pytest
import torch
from PIL import Image

from ditfuse_core import images, vae as vae_mod
from ditfuse_core.training import m3
from ditfuse_core.linear_autoencoder import LinearAutoencoder
from ditfuse_core.training.data import psnr
from tools.bundled.autoencoder_fit import fit_linear_autoencoder

EXAMPLES = Path(__file__).resolve().parents[1] / "example_images"


@pytest.fixture(scope="module")
def fitted():
    sources = [m3.Source(image=str(p)) for p in sorted(EXAMPLES.glob("*.png"))]
    return fit_linear_autoencoder(sources, crops=60, size=64)


def _enlarged_example(k: int = 0, scale: float = 2.0) -> torch.Tensor:
    img = Image.open(sorted(EXAMPLES.glob("*.png"))[k]).convert("RGB").crop((0, 0, 96, 80))
    return images.prepare(img, int(96 * scale))


def test_round_trip_at_the_working_size_is_nearly_lossless(fitted):
    ae, rec = fitted
    assert rec["variance_kept"] > 0.99 and ae.downsample_factor == 4
    x = _enlarged_example()
    z = vae_mod.encode(ae, x, sample=False)
    assert z.shape == (1, 16, x.shape[-2] // 4, x.shape[-1] // 4)
    assert 0.3 < float(z.std()) < 3  # scaling_factor: about unit std, as the VAE's latents
    assert psnr(vae_mod.decode(ae, z), x) > 40


def test_a_latent_average_decodes_to_the_pixel_average(fitted):
    ae, _ = fitted
    x1, x2 = _enlarged_example(0), _enlarged_example(1)
    with torch.no_grad():
        z1, z2 = (ae.encode(x).latent_dist.mean for x in (x1, x2))
        mixed = ae.decode(0.3 * z1 + 0.7 * z2).sample
        apart = 0.3 * ae.decode(z1).sample + 0.7 * ae.decode(z2).sample
    assert torch.allclose(mixed, apart, atol=1e-5)


def test_the_posterior_is_a_point(fitted):
    ae, _ = fitted
    x = _enlarged_example()
    assert torch.equal(vae_mod.encode(ae, x, seed=1), vae_mod.encode(ae, x, sample=False))


def test_loads_by_class_name_and_stays_float32(fitted, tmp_path):
    ae, _ = fitted
    ae.save_pretrained(str(tmp_path / "vae"), safe_serialization=True)
    loaded = vae_mod.load_vae(tmp_path / "vae", torch.bfloat16, "cpu")
    assert isinstance(loaded, LinearAutoencoder) and loaded.dtype == torch.float32
    assert vae_mod.downsample_factor(loaded) == 4
    x = _enlarged_example()
    assert torch.equal(vae_mod.encode(loaded, x), vae_mod.encode(ae, x))
    with pytest.raises(ValueError, match="multiple of 4"):
        loaded.encode(x[..., :-1])

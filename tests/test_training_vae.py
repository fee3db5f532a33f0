"""Tiny AutoencoderKL trainer: runs on a synthetic pack, calibrates the latent scale, saves a diffusers folder."""
import json

import numpy as np
import pytest
import torch

from ditfuse_core.training import m3


@pytest.fixture()
def pack(tmp_path):
    from PIL import Image

    (tmp_path / "images").mkdir()
    rng = np.random.default_rng(0)
    items = []
    for i in range(3):
        yy, xx = np.mgrid[0:80, 0:96]
        base = 128 + 90 * np.sin(xx / (4.0 + i)) * np.cos(yy / 6.0)
        img = np.stack([base, 255 - base, base * 0.6 + 40], -1) + rng.normal(0, 5, (80, 96, 3))
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(tmp_path / "images" / f"{i}.jpg")
        items.append({"image": f"images/{i}.jpg", "kind": "test"})
    (tmp_path / "index.json").write_text(json.dumps({"sources": items}))
    return tmp_path


def test_scan_pack(pack):
    srcs = m3.scan_sources(pack)
    assert len(srcs) == 3 and all(s.labels is None for s in srcs)


def test_build_vae_factor_and_channels():
    from ditfuse_core.training.vae_trainer import build_vae
    from ditfuse_core.vae import downsample_factor as vae_factor

    for f, c in ((2, 4), (4, 16), (8, 8)):
        v = build_vae(f, c)
        assert vae_factor(v) == f and v.config.latent_channels == c
        with torch.no_grad():
            z = v.encode(torch.zeros(1, 3, 32, 32)).latent_dist
        assert z.mean.shape == (1, c, 32 // f, 32 // f)
        assert float(z.std.max()) < 0.05  # starts nearly deterministic


def test_train_vae_runs_and_saves(pack, tmp_path):
    torch.manual_seed(0)
    torch.set_num_threads(1)
    from diffusers import AutoencoderKL

    from ditfuse_core.training.vae_trainer import train_vae

    out = tmp_path / "vae"
    s = train_vae(str(out), minutes=None, steps=12, batch=4, size=32, lr=2e-3, f=4, latent=8, base=8, max_ch=16,
                  device="cpu", data_root=str(pack), workers=0, log_every=4, eval_stride=0)
    assert s["steps"] == 12 and s["f"] == 4
    first, last = s["log"][0], s["log"][-1]
    assert last["loss"] < first["loss"]
    vae = AutoencoderKL.from_pretrained(str(out))
    assert vae.config.scaling_factor == pytest.approx(s["scaling_factor"])
    from ditfuse_core.vae import encode

    x = torch.rand(2, 3, 32, 32) * 2 - 1
    z = encode(vae, x, seed=0)
    assert 0.2 < float(z.std()) < 5.0


def test_decoder_only_finetune_keeps_the_latent_space(pack, tmp_path):
    """--decoder-only: encoder weights and scaling_factor unchanged (a transformer trained on the latents
    still fits), the decoder moves; the edge and latent-mix terms run."""
    torch.manual_seed(0)
    torch.set_num_threads(1)
    from diffusers import AutoencoderKL

    from ditfuse_core.training.vae_trainer import build_vae, train_vae

    vae = build_vae(4, 8, 8, 16)
    vae.register_to_config(scaling_factor=0.77)
    enc = {k: v.clone() for k, v in vae.encoder.state_dict().items()}
    dec = {k: v.clone() for k, v in vae.decoder.state_dict().items()}
    out = tmp_path / "ft"
    s = train_vae(str(out), minutes=None, steps=4, batch=4, size=32, lr=2e-3, device="cpu", data_root=str(pack),
                  workers=0, log_every=2, eval_stride=0, vae=vae, decoder_only=True, grad_weight=1.0, mix_weight=1.0)
    assert all(r["mix_loss"] > 0 for r in s["log"])
    assert s["scaling_factor"] == pytest.approx(0.77)
    ft = AutoencoderKL.from_pretrained(str(out))
    assert ft.config.scaling_factor == pytest.approx(0.77)
    assert all(torch.equal(ft.encoder.state_dict()[k], v) for k, v in enc.items())
    assert any(not torch.equal(ft.decoder.state_dict()[k], v) for k, v in dec.items())


def test_upscaled_crops_have_the_working_size_density(pack):
    """upscale=(2, 2): same crop size, content enlarged 2× (what the pipeline does to most inputs before the
    VAE sees them), so neighbouring pixels differ much less than in native crops."""
    import itertools

    from ditfuse_core.training.data import ImageCrops

    def crops(**kw):
        return torch.stack(list(itertools.islice(iter(ImageCrops(size=32, seed=0, p_degraded=0.0,
                                                                 data_root=str(pack), **kw)), 8)))

    native, up = crops(), crops(upscale=(2.0, 2.0))
    assert native.shape == up.shape == (8, 3, 32, 32)
    rough = lambda x: float(x.diff(dim=-1).abs().mean())  # noqa: E731
    assert rough(up) < 0.7 * rough(native)

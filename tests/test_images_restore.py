"""restore() brings the working-size image back to the input's size: it inverts prepare's enlargement."""
import numpy as np
import torch
from PIL import Image

from ditfuse_core import images


def _photo(w, h, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = 128 + 60 * np.sin(xx / 3.0) * np.cos(yy / 5.0) + rng.normal(0, 20, (h, w))
    return Image.fromarray(np.clip(np.stack([base, base * 0.8, 255 - base], -1), 0, 255).astype(np.uint8))


def test_lanczos_matrix_is_what_pil_does():
    img = _photo(37, 23)
    x = np.asarray(img, np.float64)
    want = np.asarray(Image.fromarray(x[..., 0].astype(np.float32), mode="F").resize((61, 50), Image.LANCZOS))
    got = images.lanczos_matrix(23, 50) @ x[..., 0] @ images.lanczos_matrix(37, 61).T
    assert np.abs(got - want).max() < 1e-3


def test_restore_inverts_an_enlarging_prepare():
    img = _photo(300, 200)                                  # → 1024 × 672 (both axes enlarged)
    prepared = images.prepare(img, 1024)
    assert prepared.shape[-2:] == (672, 1024)
    back = images.restore(prepared, img.size)[0].numpy() * 255
    assert back.shape == (200, 300, 3)
    err = np.abs(back - np.asarray(img, np.float64))
    # prepare resamples in float, so the round trip is exact to float32; LANCZOS down would low-pass the texture
    up = (prepared[0].double().numpy() + 1) * 127.5
    lanczos_back = np.stack([images.lanczos_matrix(672, 200) @ c @ images.lanczos_matrix(1024, 300).T for c in up], -1)
    lanczos_err = np.abs(lanczos_back - np.asarray(img, np.float64))
    assert err.max() < 0.01
    assert lanczos_err.mean() > 10 * err.mean()


def test_restore_of_a_shrunk_image_has_the_input_size():
    img = _photo(1500, 700)
    prepared = images.prepare(img, 1024)
    out = images.restore(prepared, img.size)
    assert out.shape == (1, 700, 1500, 3) and float(out.min()) >= 0 and float(out.max()) <= 1
    assert torch.isfinite(out).all()

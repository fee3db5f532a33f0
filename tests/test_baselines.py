"""Classical baselines: shapes, colour policy, and exact behaviour on identical inputs."""

from __future__ import annotations

import numpy as np
import pytest

from ditfuse_core.baselines import METHODS, fuse

rng = np.random.default_rng(0)
G1 = rng.integers(0, 256, (48, 64), dtype=np.uint8)
G2 = rng.integers(0, 256, (48, 64), dtype=np.uint8)
C1 = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)


@pytest.mark.parametrize("method", METHODS)
def test_shapes_and_dtype(method):
    assert fuse(method, G1, G2).shape == (48, 64)
    assert fuse(method, C1, G2).shape == (48, 64, 3)          # IVIF: colour visible + gray IR
    assert fuse(method, G1, C1).shape == (48, 64, 3)
    assert fuse(method, C1, C1[::-1]).shape == (48, 64, 3)
    assert fuse(method, C1, G2[:24, :32]).shape == (48, 64, 3)  # image 2 resized to image 1
    assert fuse(method, G1, G2).dtype == np.uint8


@pytest.mark.parametrize("method", ["average", "max", "lp", "gff"])
def test_identical_inputs_are_returned(method):
    out = fuse(method, G1, G1).astype(int)
    assert np.abs(out - G1.astype(int)).max() <= 1


def test_mertens_identical_inputs_are_returned():
    out = fuse("mertens", C1, C1).astype(int)
    assert np.abs(out - C1.astype(int)).max() <= 1


def test_average_and_max_definitions():
    assert np.array_equal(fuse("max", G1, G2), np.maximum(G1, G2))
    avg = (G1.astype(float) + G2) / 2
    assert np.abs(fuse("average", G1, G2) - avg).max() <= 0.5


def test_gray_colour_fusion_keeps_chroma_of_colour_source():
    gray_c1 = np.repeat(G1[..., None], 3, 2)  # a gray image stored in 3 channels stays gray
    assert fuse("average", gray_c1, G2).ndim == 2


def test_unknown_method():
    with pytest.raises(ValueError):
        fuse("nope", G1, G2)

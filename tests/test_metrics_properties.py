"""Property tests: documented extremes for identical inputs, symmetry in the two sources,
directions, and equivalence with the reference Python implementations named in the docstrings."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ditfuse_core.metrics import METRICS, compute_metrics, metrics_report, resolve
from ditfuse_core.metrics.ssim import ssim


def _smooth(seed, shape=(72, 88)):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=shape)
    from scipy import ndimage

    x = ndimage.gaussian_filter(x, 2.0) + 0.3 * rng.normal(size=shape)
    x = (x - x.min()) / (x.max() - x.min())
    return np.floor(x * 255 + 0.5)


A, B = _smooth(1), _smooth(2)
F = np.clip(np.floor(0.5 * A + 0.5 * B + np.random.default_rng(3).normal(0, 6, A.shape)), 0, 255)

EXPECTED_IDENTICAL = {  # metric(A, A, A)
    "SSIM": 1.0, "SSIM_sum": 2.0, "MS_SSIM": 1.0, "CC": 1.0, "QMI": 2.0, "VIF": 2.0, "Nabf": 0.0,
    "CE": 0.0, "Qcv": 0.0, "Qcb": 1.0, "Qy": 1.0, "QE": 1.0, "MEF_SSIM": 1.0, "RMSE_vifb": 0.0,
    "FMI_pixel": 1.0, "FMI_dct": 1.0, "FMI_w": 1.0, "FMI_edge": 1.0,
}


@pytest.mark.parametrize("name", sorted(EXPECTED_IDENTICAL))
def test_identical_inputs_give_documented_extreme(name):
    assert METRICS[name].fn(A, A, A) == pytest.approx(EXPECTED_IDENTICAL[name], abs=1e-6)


def test_qabf_identical_close_to_one_and_psnr_infinite():
    # The sigmoids cap Q at Γg·Γα·(1+e^-7.5)^-1·(1+e^-4.4)^-1 ≈ 0.975 (both toolkits).
    assert 0.97 < METRICS["Qabf"].fn(A, A, A) <= 1.0
    assert 0.97 < METRICS["QG"].fn(A, A, A) <= 1.0
    assert math.isinf(METRICS["PSNR"].fn(A, A, A)) and math.isinf(METRICS["PSNR_vifb"].fn(A, A, A))


def test_constant_image_no_reference_extremes():
    c = np.full((40, 50), 77.0)
    assert METRICS["EN"].fn(c, c, c) == 0.0
    assert METRICS["SD"].fn(c, c, c) == 0.0
    assert METRICS["SF"].fn(c, c, c) == 0.0
    assert METRICS["AG"].fn(c, c, c) == 0.0


SYMMETRIC = list(METRICS)  # every registered metric is symmetric in the two sources


@pytest.mark.parametrize("name", SYMMETRIC)
def test_symmetric_in_the_two_sources(name):
    assert METRICS[name].fn(A, B, F) == pytest.approx(METRICS[name].fn(B, A, F), rel=1e-9, abs=1e-12)


def test_fused_better_than_noise_on_quality_metrics():
    noise = np.random.default_rng(9).uniform(0, 255, A.shape)
    for n in ["SSIM", "Qabf", "VIF", "Qy", "CC"]:  # (MI-type scores are biased upward by noise)
        assert METRICS[n].fn(A, B, F) > METRICS[n].fn(A, B, noise), n
    for n in ["Nabf", "Qcv"]:
        assert METRICS[n].fn(A, B, F) < METRICS[n].fn(A, B, noise), n


def test_directions_are_declared():
    lower = {n for n, m in METRICS.items() if not m.higher_is_better}
    assert lower == {"Nabf", "Qcv", "CE", "RMSE_vifb"}


def test_ssim_equals_skimage_with_wang_settings():
    skm = pytest.importorskip("skimage.metrics")
    ref = skm.structural_similarity(A, F, data_range=255, gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False)
    assert ssim(A, F) == pytest.approx(ref, rel=1e-9)
    default = skm.structural_similarity(A, F, data_range=255)
    assert abs(default - ref) > 1e-4  # the trap: skimage's defaults are not Wang's SSIM


def test_vif_equals_sewar_vifp():
    sewar = pytest.importorskip("sewar.full_ref")
    from ditfuse_core.metrics.vif import vifp

    assert vifp(A, F) == pytest.approx(sewar.vifp(A, F), rel=1e-9)


def test_mi_units_and_entropy_bits():
    from ditfuse_core.metrics.entropy import entropy

    assert METRICS["MI_bits"].fn(A, B, F) == pytest.approx(METRICS["MI"].fn(A, B, F) / math.log(2))
    two = np.zeros((10, 10))
    two[:, 5:] = 255
    assert entropy(two) == pytest.approx(1.0)


def test_metrics_report_accepts_any_image_kind():
    rgb01 = np.stack([A, B, F], axis=-1) / 255.0  # HxWx3 float 0..1
    md, vals = metrics_report(rgb01, A.astype(np.uint8), F.astype(np.uint8), names=["SSIM", "Qcv", "EN"])
    assert set(vals) == {"SSIM", "Qcv", "EN"} and all(isinstance(v, float) for v in vals.values())
    assert "| Qcv |" in md and "↓" in md and "↑" in md
    small = A[::2, ::2].astype(np.uint8)  # sources are resized to the fused size
    vals = compute_metrics(small, small, A.astype(np.uint8), ["SSIM", "PSNR"])
    assert 0 < vals["SSIM"] < 1 and math.isfinite(vals["PSNR"])


def test_resolve_names():
    assert resolve(None) == resolve("default")
    assert "MEF_SSIM" in resolve(None, task="mef") and "MEF_SSIM" not in resolve(None, task="ivif")
    assert resolve("NMI,fmi")[:2] == ["QMI", "FMI_pixel"]
    with pytest.raises(KeyError):
        resolve(["nope"])


def test_fast_fmi_window_nmi_equals_literal_form():
    from ditfuse_core.metrics import fmi

    rng = np.random.default_rng(5)
    x, y = rng.uniform(0, 255, (3000, 9)), rng.uniform(0, 255, (3000, 9))
    y[:500] = 0.5 * x[:500] + 3  # positively correlated windows (upper Fréchet bound)
    y[500:1000] = 255 - x[500:1000]  # negatively correlated (lower bound)
    x[1000:1200], y[1000:1200] = np.round(x[1000:1200] / 128) * 128, np.round(y[1000:1200] / 128) * 128  # ties
    x[1200:1300] = 7.0  # constant source windows (uniform PDF)
    x[1300:1400], y[1350:1450] = 0.0, 0.0
    x[1300:1400, 4], y[1350:1450, 2] = 9.0, 9.0  # single-spike windows (delta PDFs), some against each other
    x[1500:1800], y[1500:1800] = rng.integers(0, 2, (300, 9)), rng.integers(0, 2, (300, 9))  # binary (edges)
    pa, pf = fmi._pdf(x), fmi._pdf(y)
    dense = fmi._nmi_dense(pa, pf)
    assert np.abs(fmi._nmi(pa, pf) - dense).max() < 1e-10
    with np.errstate(all="ignore"):  # the fast path's (9, n) layout: one column per window
        fast = fmi._nmi_fast(fmi._Side(x.T.copy()), fmi._Side(y.T.copy()))
    assert np.abs(fast - dense).max() < 1e-10


def _fmi_cases():
    binary = (A > 128) * 255.0
    mff = A.copy()
    mff[:, 40:] = B[:, 40:]  # fused = a source on whole regions (identical windows are skipped)
    return {
        "smooth": (A, B, F), "mff": (A, B, mff), "identical_a": (A, B, A), "flat_a": (np.full(A.shape, 77.0), B, F),
        "binary_a": (binary, B, F), "binary_all": (binary, (B > 100) * 1.0, (F > 120) * 1.0),
        "float": (A / 7.3, B * 1.1, F / 3.0),
    }


@pytest.mark.parametrize("feature", ["pixel", "dct", "wavelet", "edge"])
def test_fast_fmi_equals_reference_implementation(feature, monkeypatch):
    """``fmi`` (vectorised (9, n) path, shared F terms, skipped identical windows, binary-pattern
    table, threads) against ``fmi_reference`` (the previous row-per-window implementation)."""
    from ditfuse_core.metrics import fmi

    for name, (a, b, f) in _fmi_cases().items():
        ref = fmi.fmi_reference(a, b, f, feature)
        monkeypatch.setattr(fmi, "_CHUNK", 1000)  # several chunks, a short last one
        for threads in (1, 2):
            monkeypatch.setattr(fmi, "_THREADS", threads)
            assert abs(fmi.fmi(a, b, f, feature) - ref) < 1e-10, (name, threads)
        monkeypatch.undo()
    if feature != "wavelet":  # (the wavelet map of a 2×5 image is larger than 3×3)
        with pytest.raises(ValueError):
            fmi.fmi(A[:2, :5], B[:2, :5], F[:2, :5], feature)

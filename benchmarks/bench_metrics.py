"""Speed of every registered metric on one 640×480 pair (benchmark, not a test).

Targets: the default metric set + MEF_SSIM (18 metrics, one compute_metrics call) < 1 s; FMI, all four
features, < 3 s. Uses VIFB's labMan pair and its GFF result from shared/data (``$DITFUSE_DATA`` or
``../shared/data``) when present, else a synthetic 640×480 pair. Prints the load average, since timings on a
shared machine depend on it.

    python -m benchmarks.bench_metrics [--fmi-reference]

``--fmi-reference`` also times ``fmi.fmi_reference`` (the previous, literal FMI implementation) per feature
and prints the difference of the two values.
"""
from __future__ import annotations

import argparse
import os

import numpy as np
from PIL import Image

from benchmarks import common
from ditfuse_core.metrics import FMI_ALL, METRICS, compute_metrics, fmi
from ditfuse_core.metrics.convert import to_gray
from ditfuse_core.metrics.registry import DEFAULT

TARGET_SET = DEFAULT + ["MEF_SSIM"]  # EN SD SF AG MI QMI SCD CC VIF Qabf Nabf SSIM MS-SSIM PSNR Qcb Qcv Qy MEF-SSIM


def load():
    """(visible, infrared, fused, name): gray float images on 0–255."""
    root = common.data_dir("eval", "ivif", "vifb")
    if root is not None and (root / "vi" / "labMan.jpg").exists():
        rd = lambda p: to_gray(np.asarray(Image.open(p)))  # noqa: E731
        return rd(root / "vi" / "labMan.jpg"), rd(root / "ir" / "labMan.jpg"), rd(root / "reference" / "labMan_GFF.jpg"), "VIFB labMan"
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0, 255, (480, 640)), rng.uniform(0, 255, (480, 640))
    return a, b, 0.5 * (a + b), "synthetic (no shared/data/eval/ivif/vifb)"


def best_of(fn, n=3) -> float:
    return min(common.timed(fn)[1] for _ in range(n))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fmi-reference", action="store_true", help="also time the previous FMI implementation")
    args = ap.parse_args()
    a, b, f, src = load()
    print(f"pair: {src}, {a.shape[1]}×{a.shape[0]}; best of 3 runs; load average before: {os.getloadavg()[0]:.2f}\n")
    print(common.markdown_table(["metric", "better", "seconds"],
                                [(name, m.arrow, f"{best_of(lambda: m.fn(a, b, f)):.3f}") for name, m in METRICS.items()],
                                "lcr"))
    t_set = best_of(lambda: compute_metrics(a, b, f, TARGET_SET))
    t_fmi = best_of(lambda: compute_metrics(a, b, f, FMI_ALL))
    print(f"\ndefault set + MEF_SSIM without FMI ({len(TARGET_SET)} metrics, one compute_metrics call): "
          f"{t_set:.3f} s (target < 1 s)")
    print(f"FMI, four features (pixel, dct, wavelet, edge): {t_fmi:.3f} s (target < 3 s)")
    if args.fmi_reference:
        rows = []
        for feat in fmi.FEATURES:
            v, r = fmi.fmi(a, b, f, feat), fmi.fmi_reference(a, b, f, feat)
            rows.append((feat, f"{best_of(lambda: fmi.fmi(a, b, f, feat)):.3f}",
                         f"{best_of(lambda: fmi.fmi_reference(a, b, f, feat), 1):.3f}", f"{abs(v - r):.1e}"))
        print("\n" + common.markdown_table(["feature", "fmi (s)", "fmi_reference (s)", "abs. difference"], rows))
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

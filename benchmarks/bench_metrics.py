"""Speed of every registered metric on one 640×480 pair (benchmark, not a test).

Targets (issue 4): all metrics of the issue's list except FMI < 1 s together; FMI, all four
features, < 3 s. Uses VIFB's labMan pair (640×480) and its GFF result from ../shared/data when
present, else synthetic 640×480 images. Run: ``python benchmarks/bench_metrics.py``
(``--fmi-reference`` also times ``fmi.fmi_reference``, the previous FMI implementation, per feature,
and checks that both give the same values). Prints the load average, since the machine is shared.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ditfuse_core.metrics import FMI_ALL, METRICS, compute_metrics, fmi  # noqa: E402
from ditfuse_core.metrics.convert import to_gray  # noqa: E402
from ditfuse_core.metrics.registry import DEFAULT  # noqa: E402

ISSUE_SET = DEFAULT + ["MEF_SSIM"]  # EN SD SF AG MI QMI SCD CC VIF Qabf Nabf SSIM MS-SSIM PSNR Qcb Qcv Qy MEF-SSIM


def load():
    root = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "eval" / "ivif" / "vifb"
    if (root / "vi" / "labMan.jpg").exists():
        from PIL import Image

        rd = lambda p: to_gray(np.asarray(Image.open(p)))  # noqa: E731
        return rd(root / "vi" / "labMan.jpg"), rd(root / "ir" / "labMan.jpg"), rd(root / "reference" / "labMan_GFF.jpg"), "VIFB labMan"
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0, 255, (480, 640)), rng.uniform(0, 255, (480, 640))
    return a, b, 0.5 * (a + b), "synthetic"


def best_of(fn, n=3):
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return min(ts)


def main():
    a, b, f, src = load()
    print(f"pair: {src}, {a.shape[1]}×{a.shape[0]}; best of 3 runs; load average before: {os.getloadavg()[0]:.2f}\n")
    print("| metric | better | seconds |\n| --- | :---: | ---: |")
    for name, m in METRICS.items():
        print(f"| {name} | {m.arrow} | {best_of(lambda: m.fn(a, b, f)):.3f} |")
    t_set = best_of(lambda: compute_metrics(a, b, f, ISSUE_SET))
    t_fmi = best_of(lambda: compute_metrics(a, b, f, FMI_ALL))
    print(f"\nissue set without FMI ({len(ISSUE_SET)} metrics, one compute_metrics call): {t_set:.3f} s (target < 1 s)")
    print(f"FMI, four features (pixel, dct, wavelet, edge): {t_fmi:.3f} s (target < 3 s)")
    if "--fmi-reference" in sys.argv[1:]:
        print("\n| feature | fmi (s) | fmi_reference (s) | abs. difference |\n| --- | ---: | ---: | ---: |")
        for feat in fmi.FEATURES:
            v, r = fmi.fmi(a, b, f, feat), fmi.fmi_reference(a, b, f, feat)
            t_new = best_of(lambda: fmi.fmi(a, b, f, feat))
            t_ref = best_of(lambda: fmi.fmi_reference(a, b, f, feat), 1)
            print(f"| {feat} | {t_new:.3f} | {t_ref:.3f} | {abs(v - r):.1e} |")
    print(f"\nload average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()

"""The metric registry: name → function, direction and input kind.

Why: direction (higher/lower is better) is part of a metric's definition; the evaluation report,
the "best" markers and the ComfyUI node all read it from here instead of hard-coding it.
Every function takes 2-D float64 gray arrays on 0–255 (see ``convert.to_gray``) in DiTFuse's order
(image 1, image 2, fused); no-reference metrics ignore the sources.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from . import correlation, entropy, fmi, gradient, mef_ssim, ms_ssim, mutual_information, nabf, psnr
from . import qabf, qcb, qcv, qe, qy, spatial_frequency, ssim, std, vif


@dataclass(frozen=True)
class Metric:
    name: str
    fn: Callable  # fn(a, b, f) -> float
    higher_is_better: bool
    summary: str
    slow: bool = False

    @property
    def arrow(self) -> str:
        return "↑" if self.higher_is_better else "↓"


def _noref(fn):
    return lambda a, b, f: fn(f)


_ALL = [
    Metric("EN", _noref(entropy.entropy), True, "entropy of F, bits (256 bins)"),
    Metric("SD", _noref(std.standard_deviation), True, "population std of F"),
    Metric("SF", _noref(spatial_frequency.spatial_frequency), True, "spatial frequency, sums / MN"),
    Metric("AG", _noref(gradient.average_gradient), True, "average gradient (VIFB)"),
    Metric("EI", _noref(gradient.edge_intensity), True, "mean Sobel magnitude"),
    Metric("MI", mutual_information.mutual_information, True, "MI(A,F)+MI(B,F), nats"),
    Metric("MI_bits", mutual_information.mutual_information_bits, True, "MI(A,F)+MI(B,F), bits"),
    Metric("QMI", mutual_information.nmi_hossny, True, "Hossny normalised MI (0..2)"),
    Metric("QNCIE", mutual_information.ncie, True, "nonlinear correlation information entropy"),
    Metric("FMI_pixel", fmi.fmi_pixel, True, "fast-FMI, pixel features, 3x3", slow=True),
    Metric("FMI_dct", fmi.fmi_dct, True, "fast-FMI, DCT features, 3x3", slow=True),
    Metric("FMI_w", fmi.fmi_wavelet, True, "fast-FMI, dmey wavelet features, 3x3", slow=True),
    Metric("FMI_edge", fmi.fmi_edge, True, "fast-FMI, Sobel edge features, 3x3", slow=True),
    Metric("SCD", correlation.scd, True, "sum of correlations of differences"),
    Metric("CC", correlation.correlation_coefficient, True, "mean Pearson r with the sources"),
    Metric("VIF", vif.vif, True, "pixel VIF(A,F)+VIF(B,F), sigma_n^2=2"),
    Metric("Qabf", qabf.qabf, True, "Xydeas-Petrovic (VIFB form, quirk kept)"),
    Metric("QG", qabf.qabf_liu, True, "Xydeas-Petrovic (Liu/MFIF form)"),
    Metric("Nabf", nabf.nabf, False, "Kumar modified artefact measure"),
    Metric("SSIM", ssim.ssim_mean, True, "mean of SSIM(A,F), SSIM(B,F)"),
    Metric("SSIM_sum", ssim.ssim_sum, True, "SSIM(A,F)+SSIM(B,F) (VIFB)"),
    Metric("MS_SSIM", ms_ssim.ms_ssim, True, "mean of MS-SSIM(A,F), MS-SSIM(B,F)"),
    Metric("PSNR", psnr.psnr, True, "10log10(255^2/MSE), MSE averaged over sources"),
    Metric("PSNR_vifb", psnr.psnr_vifb, True, "VIFB's non-standard PSNR"),
    Metric("RMSE_vifb", psnr.rmse_vifb, False, "VIFB's non-standard RMSE"),
    Metric("CE", entropy.cross_entropy, False, "cross-entropy of the sources vs F (VIFB)"),
    Metric("Qcb", qcb.qcb, True, "Chen-Blum"),
    Metric("Qcv", qcv.qcv, False, "Chen-Varshney"),
    Metric("Qy", qy.qy, True, "Yang SSIM-based"),
    Metric("QE", qe.qe, True, "Piella edge-dependent index"),
    Metric("MEF_SSIM", mef_ssim.mef_ssim, True, "Ma et al. MEF-SSIM"),
]

METRICS: dict[str, Metric] = {m.name: m for m in _ALL}
ALIASES = {"NMI": "QMI", "Q_AB/F": "Qabf", "QAB/F": "Qabf", "MEF-SSIM": "MEF_SSIM", "MS-SSIM": "MS_SSIM",
           "FMI_wavelet": "FMI_w", "Q_Y": "Qy", "Q_CB": "Qcb", "Q_CV": "Qcv"}

# Default set (fast, the list without FMI): used by metrics_report and `ditfuse eval`.
DEFAULT = ["EN", "SD", "SF", "AG", "MI", "QMI", "SCD", "CC", "VIF", "Qabf", "Nabf", "SSIM", "MS_SSIM",
           "PSNR", "Qcb", "Qcv", "Qy"]
FMI_ALL = ["FMI_pixel", "FMI_dct", "FMI_w", "FMI_edge"]
TASK_EXTRA = {"mef": ["MEF_SSIM"], "mff": [], "ivif": []}


def resolve(names=None, task: str | None = None) -> list[str]:
    """Names (or 'default', 'all', 'fmi') → canonical metric names; unknown names raise KeyError."""
    if names is None or names == "default":
        return DEFAULT + TASK_EXTRA.get(task or "", [])
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    out: list[str] = []
    for n in names:
        if n == "default":
            out += DEFAULT + TASK_EXTRA.get(task or "", [])
        elif n == "all":
            out += list(METRICS)
        elif n.lower() == "fmi":
            out += FMI_ALL
        else:
            key = ALIASES.get(n, n)
            if key not in METRICS:
                raise KeyError(f"unknown metric {n!r}; known: {', '.join(METRICS)}")
            out.append(key)
    return list(dict.fromkeys(out))

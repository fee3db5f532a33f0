"""Input conversion shared by every metric: one gray plane in float64 on the 0–255 scale.

Why: toolkits silently disagree on colour handling and value range, so every metric here takes
already-converted 2-D float64 arrays on 0–255 and this module is the only place that decides how
an input becomes one. Conventions:

* uint8 / integer input is taken as 0–255; float input whose maximum is <= 1 is taken as 0–1 and
  multiplied by 255; any other float input is taken as already 0–255.
* RGB → gray is MATLAB's ``rgb2gray`` (ITU-R BT.601 luma, 0.298936·R + 0.587043·G + 0.114021·B).
  For integer input the result is rounded to integers as ``rgb2gray`` does on uint8 images, so a
  gray-converted uint8 image reproduces the MATLAB toolkits' inputs exactly.
* A 3-channel image whose channels are identical (TNO, VIFB IR files) is simply one plane.
"""

from __future__ import annotations

import numpy as np

RGB2GRAY_WEIGHTS = (0.298936021293775, 0.587043074451121, 0.114020904255103)


def as_float255(img) -> np.ndarray:
    """Any HxW / HxWxC array, PIL image or 0–1 tensor-like → float64 array on 0–255 (channels kept)."""
    if hasattr(img, "mode") and hasattr(img, "size") and not isinstance(img, np.ndarray):  # PIL
        img = np.asarray(img.convert("RGB") if img.mode not in ("L", "RGB") else img)
    if hasattr(img, "detach"):  # torch tensor
        img = img.detach().cpu().numpy()
    arr = np.asarray(img)
    if arr.ndim == 3 and arr.shape[2] == 4:
        arr = arr[..., :3]
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool:
        return arr.astype(np.float64)
    out = arr.astype(np.float64)
    if out.size and np.nanmax(out) <= 1.0:
        out = out * 255.0
    return out


def rgb2gray(arr: np.ndarray, round_result: bool = False) -> np.ndarray:
    """MATLAB ``rgb2gray`` on a float 0–255 HxWx3 array (optionally rounded like the uint8 case)."""
    r, g, b = RGB2GRAY_WEIGHTS
    y = r * arr[..., 0] + g * arr[..., 1] + b * arr[..., 2]
    if round_result:
        y = np.floor(y + 0.5)  # MATLAB rounds half away from zero; values are >= 0
    return y


def to_gray(img) -> np.ndarray:
    """The default metric input: 2-D float64 on 0–255 (see module docstring for the rules)."""
    integer_input = _is_integer(img)
    arr = as_float255(img)
    if arr.ndim == 2:
        return arr
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected HxW or HxWx3 image, got shape {arr.shape}")
    if np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0], arr[..., 2]):
        return np.ascontiguousarray(arr[..., 0])
    return rgb2gray(arr, round_result=integer_input)


def normalize1(x: np.ndarray) -> np.ndarray:
    """Min–max stretch to 0–255 then round (Z. Liu's ``normalize1``, used by QMI/QNCIE/Qcb/Qcv).

    An all-zero image stays zero; a constant non-zero image would divide by zero in MATLAB, here it
    becomes all zeros.
    """
    x = np.asarray(x, dtype=np.float64)
    hi, lo = x.max(), x.min()
    if hi == lo:
        return np.zeros_like(x)
    return np.floor((x - lo) / (hi - lo) * 255.0 + 0.5)


def _is_integer(img) -> bool:
    if hasattr(img, "mode") and not isinstance(img, np.ndarray):
        return True
    if hasattr(img, "detach"):
        return not img.is_floating_point()
    return np.issubdtype(np.asarray(img).dtype, np.integer)

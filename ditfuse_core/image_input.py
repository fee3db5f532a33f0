"""Reading images into 8-bit RGB without silently wrong pixels: every file kind (`open_image`) and every
in-memory kind (`to_pil_list`: PIL, arrays, ComfyUI tensors). High bit depths are scaled, not clipped; float
data must be in 0..1; a file that does not decode fails here, naming it, before any model work.
"""
from __future__ import annotations

import logging
import os

import numpy as np
import torch
from PIL import Image, ImageOps

logger = logging.getLogger(__name__)

# Float pixels within this much of 0..1 are rounding noise and clamped (image files; see `_float_to_uint8`).
FLOAT_TOLERANCE = 1e-3
# Float tensors/arrays given to `to_pil_list` may overshoot 0..1 by up to this much: ComfyUI's bicubic
# ImageScale does not clamp, and its overshoot reaches -0.33..1.40 on binary textures (ComfyUI itself clips
# such values when it saves or previews). They are clamped; anything further out is another convention
# (0..255, 0..65535, -1..1) or garbage and is rejected.
TENSOR_OVERSHOOT = 0.5
# A 16-bit image whose maximum is below this probably holds 12-bit (or less) raw sensor values; it is still
# scaled by 65535 (the file says 16 bits) but a warning says why it looks dark.
_LOW_RANGE = 4096

_warned: set[str] = set()


class ImageReadError(ValueError):
    """An image file that does not exist, does not decode, or holds pixels we cannot read correctly."""


def _warn_once(key: str, message: str) -> None:
    """Log `message` as a warning the first time `key` comes up in this process, at debug level after."""
    if key in _warned:
        logger.debug(message)
        return
    _warned.add(key)
    logger.warning("%s (further images like this are not reported)", message)


def open_image(path: str | os.PathLike) -> Image.Image:
    """Read an image file as an 8-bit RGB PIL image, fully decoded (the file is closed on return).

    Raises `ImageReadError` (a `ValueError`) naming the file, "cannot read image '<path>': <reason>", when
    the file does not exist, is not an image, is truncated or corrupt, or holds pixels that cannot be read
    without guessing (float data outside 0..1, negative integers).

    Policies:
      * EXIF orientation is applied (`ImageOps.exif_transpose`), so phone photos come out upright, as
        ComfyUI's Load Image and image viewers show them (TIFF orientation tags too; Pillow applies those
        while decoding). A broken EXIF block is ignored with a warning.
      * Bit depth: 8-bit L/RGB as stored. 16-bit gray (PNG/TIFF/PGM, modes "I;16*" and "I") is scaled by
        its real range, v·255/65535 rounded — never clipped. 16-bit RGB/RGBA PNGs and TIFFs are reduced to
        8 bits by Pillow itself (its high byte: floor(v/256), at most one level below rounding), which is
        correctly scaled. See `_int_gray_to_uint8` for mode "I" files of 32 bits.
      * Float ("F", e.g. float TIFF, PFM) must be in 0..1 (± FLOAT_TOLERANCE) and is scaled by 255;
        anything else (temperatures, 0..255 floats, NaN) is rejected: its scale cannot be known.
      * Transparency (RGBA, LA, PA, palette or colour-key transparency) is composited over black: for
        infrared/visible fusion a transparent pixel carries no signal, and black is what "no signal" is;
        dropping alpha would instead expose whatever colour the editor left under transparent pixels.
        Fully opaque images are unchanged; a warning is logged (once per process) when alpha mattered.
      * Palette ("P") → RGB; bilevel ("1") → 0/255 gray; CMYK → RGB by Pillow's conversion (Pillow
        undoes the inverted CMYK of Adobe JPEGs while decoding; ICC profiles are not applied).
      * Gray images come back as RGB with three equal channels; multi-frame files give their first frame.
    If something set `PIL.ImageFile.LOAD_TRUNCATED_IMAGES` (ComfyUI does briefly), Pillow pads truncated
    files instead of failing; this function does not override that global.
    """
    name = os.fspath(path)
    try:
        # Through a file object: Pillow (13.0) memory-maps uncompressed files opened by name, and that path
        # scrambles TIFFs whose orientation tag is 5–8 (transposed); decoding from the stream is correct.
        with open(path, "rb") as f, Image.open(f) as im:
            im.load()
            bits = _declared_bits(im)
            fmt = im.format
            try:
                image = ImageOps.exif_transpose(im)
            except Exception as e:  # a malformed EXIF block should not cost the picture
                logger.warning("%s: EXIF orientation not applied (%s)", name, e)
                image = im.copy()
            return _to_rgb8(image, bits=bits, name=f"'{name}'" + (f" ({fmt})" if fmt else ""))
    except MemoryError:
        raise
    except Exception as e:
        raise ImageReadError(f"cannot read image '{name}': {_reason(e)}") from e


def _reason(e: Exception) -> str:
    if isinstance(e, FileNotFoundError):
        return "no such file"
    if isinstance(e, IsADirectoryError):
        return "it is a directory"
    if isinstance(e, PermissionError):
        return "permission denied"
    if isinstance(e, Image.UnidentifiedImageError):
        return "not an image file Pillow can decode (unknown format or corrupt header)"
    return str(e) or type(e).__name__


def _declared_bits(im: Image.Image) -> int | None:
    """Bits per sample the file declares for an integer gray image, where the format fixes it."""
    if not im.mode.startswith("I"):
        return None
    if im.format == "TIFF":
        bits = getattr(im, "tag_v2", {}).get(258)
        bits = bits[0] if isinstance(bits, (tuple, list)) else bits
        return int(bits) if bits else None
    if im.format in ("PNG", "PPM"):
        # PNG gray is at most 16 bits, and its 16-bit samples span 0..65535 whatever sBIT says; Pillow
        # rescales PGM files with maxval > 255 to 0..65535.
        return 16
    return None


def _to_rgb8(im: Image.Image, bits: int | None = None, name: str = "image") -> Image.Image:
    """Any PIL mode → 8-bit RGB by the policies of `open_image` (without EXIF). `bits`: the bit depth the
    file declares for integer gray modes; `name` is for warnings. Raises ValueError (its message without the
    name) for pixels that cannot be read correctly."""
    mode = im.mode
    if mode == "RGB":
        return im.copy() if "transparency" not in im.info else _composite(im, name)
    if mode == "L":
        return im.convert("RGB") if "transparency" not in im.info else _composite(im, name)
    if mode.startswith("I"):
        return Image.fromarray(_int_gray_to_uint8(np.asarray(im), bits, name)).convert("RGB")
    if mode == "F":
        return Image.fromarray(_float_to_uint8(np.asarray(im, dtype=np.float32))).convert("RGB")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in im.info):
        return _composite(im, name)
    try:  # "1" → 0/255, "P" → its colours, "CMYK", "YCbCr", "RGBX", …
        return im.convert("RGB")
    except ValueError as e:
        raise ValueError(f"unsupported image mode {mode!r} ({e})") from e


def _composite(im: Image.Image, name: str) -> Image.Image:
    """Transparency → composited over black (transparent = no signal)."""
    if im.mode in ("RGBa", "La"):  # premultiplied (TIFF associated alpha): the colour bands are the composite
        bands = im.split()
        if bands[-1].getextrema()[0] < 255:
            _warn_once("alpha", f"{name} has transparency: composited over black")
        return Image.merge("RGB", bands[:3]) if im.mode == "RGBa" else bands[0].convert("RGB")
    rgba = im.convert("RGBA")
    if rgba.getextrema()[3][0] == 255:
        return rgba.convert("RGB")
    _warn_once("alpha", f"{name} has transparency: composited over black")
    black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
    return Image.alpha_composite(black, rgba).convert("RGB")


def _int_gray_to_uint8(arr: np.ndarray, bits: int | None, name: str) -> np.ndarray:
    """Integer gray samples → uint8, v·255/max rounded. max = 2**bits − 1 when the file declares ≤ 16 bits
    (16-bit PNG/TIFF/PGM: 65535). Otherwise (mode "I" from a 32-bit TIFF, or no file) the values decide,
    since Pillow writes 16-bit data it holds as mode "I" into 32-bit TIFFs: all within 0..65535 → 16-bit;
    larger → the full signed 32-bit range; negative → rejected (also what Pillow makes of uint32 TIFFs
    above 2**31)."""
    arr = arr.astype(np.float64)
    if arr.size == 0:
        raise ValueError("no pixels")
    lo, hi = float(arr.min()), float(arr.max())
    if bits is not None and 0 < bits <= 16:
        top = float(2**bits - 1)
    elif lo < 0:
        raise ValueError(f"negative integer pixel values (min {lo:.0f}); expected unsigned intensities")
    else:
        top = 65535.0 if hi <= 65535 else float(2**31 - 1)
    if top == 65535.0 and 0 < hi < _LOW_RANGE:
        _warn_once("lowrange", f"{name} is 16-bit but its values only reach {hi:.0f} of 65535, so it looks dark; "
                               "if it holds 12-bit (or less) raw values, rescale it to the full range")
    return np.clip(np.rint(arr * (255.0 / top)), 0, 255).astype(np.uint8)


def _float_to_uint8(arr: np.ndarray) -> np.ndarray:
    """Float samples in 0..1 (± FLOAT_TOLERANCE) → uint8 rounded; others raise ValueError."""
    finite = np.isfinite(arr)
    if not finite.all():
        raise ValueError(f"{int((~finite).sum())} NaN/infinite float pixel values")
    lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
    if lo < -FLOAT_TOLERANCE or hi > 1 + FLOAT_TOLERANCE:
        raise ValueError(f"float pixel values from {lo:.6g} to {hi:.6g}; float images must be in 0..1 "
                         "(rescale it, or save it as 8/16-bit)")
    return np.rint(np.clip(arr, 0, 1) * 255.0).astype(np.uint8)


def to_pil_list(images) -> list[Image.Image]:
    """PIL image, list of PIL, HxWxC array, or a ComfyUI float tensor [B,H,W,C] (or [H,W,C]) in 0..1 → RGB PILs.

    PIL images go through `open_image`'s mode policies (16-bit scaled, alpha over black; no EXIF: the
    caller owns orientation). Float tensors/arrays must be finite and in 0..1; overshoot up to
    TENSOR_OVERSHOOT (resampling ringing) is clamped, anything else raises ValueError saying what was found.
    Integer arrays/tensors: uint8 as is, uint16 scaled by 1/257, bool as 0/255, other integer types must hold
    0..255. Raises TypeError for other types."""
    if isinstance(images, Image.Image):
        try:
            return [_to_rgb8(images, name=f"a {images.mode} PIL image")]
        except ValueError as e:
            raise ValueError(f"DiTFuse: {images.mode} PIL image: {e}") from e
    if isinstance(images, (list, tuple)):
        return [im for x in images for im in to_pil_list(x)]
    if isinstance(images, torch.Tensor):
        t = images.detach().cpu()
        if t.dim() == 3:
            t = t[None]
        if not (t.is_floating_point() or t.dtype == torch.bool):
            return [_array_to_pil(_int_to_uint8(x.numpy())) for x in t]
        t = t.float()
        _check_float_range(t.numpy(), "image tensor")
        return [_array_to_pil((x.clamp(0, 1).numpy() * 255.0).round().astype(np.uint8)) for x in t]
    if isinstance(images, np.ndarray):
        arr = images
        if arr.dtype == np.bool_:
            arr = arr.astype(np.uint8) * 255
        elif np.issubdtype(arr.dtype, np.integer):
            arr = _int_to_uint8(arr)
        elif np.issubdtype(arr.dtype, np.floating):
            _check_float_range(arr, "image array")
            arr = (np.clip(arr, 0, 1) * 255.0).round().astype(np.uint8)
        else:
            raise TypeError(f"unsupported image array dtype {arr.dtype}")
        return [_array_to_pil(arr)]
    raise TypeError(f"unsupported image type {type(images).__name__}")


def _int_to_uint8(arr: np.ndarray) -> np.ndarray:
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.bool_:
        return arr.astype(np.uint8) * 255
    if arr.dtype == np.uint16:
        return np.rint(arr.astype(np.float64) / 257.0).astype(np.uint8)
    lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
    if lo < 0 or hi > 255:
        raise ValueError(f"{arr.dtype} image array with values from {lo} to {hi}: integer images must be uint8 "
                         "(or hold 0..255), or uint16 (0..65535); or pass float 0..1")
    return arr.astype(np.uint8)


def _check_float_range(arr: np.ndarray, what: str) -> None:
    """Raise ValueError unless every value is finite and within 0..1 ± TENSOR_OVERSHOOT."""
    finite = np.isfinite(arr)
    if not finite.all():
        n = int((~finite).sum())
        raise ValueError(f"DiTFuse: {what} has {n} NaN/infinite value{'s' if n != 1 else ''} of {arr.size}; "
                         "ComfyUI IMAGE tensors are float 0..1")
    if arr.size == 0:
        return
    lo, hi = float(arr.min()), float(arr.max())
    if lo >= -TENSOR_OVERSHOOT and hi <= 1 + TENSOR_OVERSHOOT:
        return
    if lo >= -1 - FLOAT_TOLERANCE and lo < -TENSOR_OVERSHOOT and hi <= 1 + TENSOR_OVERSHOOT:
        hint = "looks like -1..1: use (x + 1) / 2"
    elif lo >= -TENSOR_OVERSHOOT and hi <= 255 + FLOAT_TOLERANCE:
        hint = f"got values up to {hi:.6g}, looks like 0..255: divide by 255"
    elif lo >= -TENSOR_OVERSHOOT and hi <= 65535 + FLOAT_TOLERANCE:
        hint = f"got values up to {hi:.6g}, looks like 0..65535: divide by 65535"
    else:
        hint = "rescale to 0..1"
    raise ValueError(f"DiTFuse: {what} values range from {lo:.6g} to {hi:.6g}; ComfyUI IMAGE tensors are "
                     f"float 0..1 — {hint}")


def _array_to_pil(arr: np.ndarray) -> Image.Image:
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 3 and arr.shape[-1] == 4:
        arr = arr[..., :3]
    return Image.fromarray(arr).convert("RGB")

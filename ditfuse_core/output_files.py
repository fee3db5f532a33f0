"""Writing result images so that an interrupted run never leaves a broken or half-replaced file.

The image is written to a hidden temporary file in the destination folder (same file system) and renamed over
the destination only when complete: a reader sees the old file or the new one, never a part. A run killed
mid-write (SIGKILL) leaves at most a hidden `.NAME.*.part`, which `remove_partials` clears on the next run.
"""
from __future__ import annotations

import glob
import os
import tempfile
from pathlib import Path

from PIL import Image


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_image(image: Image.Image, path: str | os.PathLike, overwrite: bool = True, **save_kw) -> Path:
    """Write `image` to `path` atomically. overwrite False: fail (FileExistsError) if `path` appeared meanwhile,
    instead of replacing it. save_kw go to PIL's save (e.g. pnginfo)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"unknown image extension {path.suffix!r}: {path}")
    if fmt == "JPEG" and image.mode not in ("RGB", "L"):
        image = image.convert("RGB")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            image.save(f, format=fmt, **save_kw)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it 0600; a saved image gets the usual mode
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # atomic, and refuses an existing name
            os.unlink(tmp)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def remove_partials(path: str | os.PathLike) -> int:
    """Delete what an earlier, killed write of `path` left behind; the number removed."""
    path = Path(path)
    n = 0
    for p in path.parent.glob(f".{glob.escape(path.name)}.*.part") if path.parent.is_dir() else ():
        p.unlink(missing_ok=True)
        n += 1
    return n

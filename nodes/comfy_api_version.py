"""The node API this pack builds on: the newest versioned `comfy_api` the running ComfyUI has.

Why: `comfy_api.latest` changes with ComfyUI (marked unstable upstream); a versioned module (`v0_0_3` since
ComfyUI 0.8, `v0_0_2` in 0.3.75) keeps its names when ComfyUI moves on. Older ComfyUIs without any fall back to
`latest`.
"""
from __future__ import annotations

import importlib

VERSIONS = ("comfy_api.v0_0_3", "comfy_api.v0_0_2")


def _load():
    for name in VERSIONS:
        try:
            m = importlib.import_module(name)
            return name, m.io, m.ui, m.ComfyExtension
        except (ImportError, AttributeError):
            continue
    from comfy_api.latest import ComfyExtension, io, ui

    return "comfy_api.latest", io, ui, ComfyExtension


API, io, ui, ComfyExtension = _load()


def comfyui_version() -> tuple[int, ...]:
    """The running ComfyUI's version, (0,) when it does not say."""
    try:
        from comfyui_version import __version__
    except ImportError:
        return (0,)
    return tuple(int(x) for x in __version__.split("-")[0].split(".") if x.isdigit())


# ComfyUI ≥ 0.7 checks a V3 combo's value against its options itself (one message, on that input, for inputs a
# node's validate_inputs does not take); 0.3.75 does not check them at all, so the pack does.
CORE_CHECKS_COMBOS = comfyui_version() >= (0, 7)

"""The node API this pack builds on: the newest versioned `comfy_api` the running ComfyUI has.

Why: `comfy_api.latest` is marked unstable upstream; a named version is what core offers custom nodes instead.
`v0_0_2` is the newest in 0.3.75 … 0.33.0; `v0_0_3` (adds `sdk`) comes after 0.33.0. Both re-export `latest`'s
`io`, `ui` and `ComfyExtension` unchanged, so this picks a name, not a frozen copy. ComfyUIs without either fall
back to `latest`.
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

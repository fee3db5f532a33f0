"""ComfyUI entry point of the DiTFuse node pack (V3 API: `comfy_entrypoint`).

Importing this module needs neither ComfyUI nor torch: the nodes are imported only when ComfyUI calls
`comfy_entrypoint()`, so tests and the CLI can import the package without ComfyUI.
"""
import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))


def _ensure_core_importable() -> None:
    """Use the installed ditfuse_core, else the copy in this folder (pack cloned into custom_nodes/).
    Appended, never prepended: this folder's `nodes/` package must not shadow ComfyUI's `nodes` module."""
    try:
        import ditfuse_core  # noqa: F401
    except ImportError:
        if _HERE not in sys.path:
            sys.path.append(_HERE)


async def comfy_entrypoint():
    _ensure_core_importable()
    from .nodes.ditfuse_nodes import DiTFuseExtension

    return DiTFuseExtension()


# Frontend script: warns when a loaded workflow names a model / LoRA that is not installed (web/ditfuse.js).
WEB_DIRECTORY = "./web"

__all__ = ["comfy_entrypoint", "WEB_DIRECTORY"]

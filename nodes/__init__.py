"""DiTFuse ComfyUI node pack.

`adapters` has no ComfyUI dependency; `ditfuse_nodes` (the V3 nodes) is imported only inside ComfyUI, by the
pack's `comfy_entrypoint` (repo-root `__init__.py`).
"""

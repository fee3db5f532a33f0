"""DiTFuse ComfyUI node pack.

`adapters` has no ComfyUI dependency; `ditfuse_nodes` (the V3 extension over `model_nodes`, `task_nodes`,
`chain_nodes`, `tool_nodes` and `common`) is imported only inside ComfyUI, by the pack's `comfy_entrypoint`
(repo-root `__init__.py`).
"""

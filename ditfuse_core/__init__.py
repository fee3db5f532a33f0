"""DiTFuse: instruction-driven image fusion with one Diffusion Transformer (OmniGen-v1 + LoRA).

The library behind the ComfyUI nodes and the `ditfuse` CLI; it never imports ComfyUI. See
docs/ARCHITECTURE.md for the data path and the public API.
"""
__version__ = "0.1.0"


def __getattr__(name):
    if name == "DiTFusePipeline":
        from .pipeline import DiTFusePipeline

        return DiTFusePipeline
    raise AttributeError(name)

"""The bundled model's pipeline and its equal-weight twin, shared by the tests of what the bundled model does
(#25). Not a test module (no test_ prefix)."""
import copy

import numpy as np
import torch

from ditfuse_core.pipeline import DiTFusePipeline
from tools.bundled import selection


def bundled_pipe() -> DiTFusePipeline:
    torch.set_num_threads(2)
    return DiTFusePipeline.from_pretrained(None, device="cpu")


def twin(pipe: DiTFusePipeline, edit) -> DiTFusePipeline:
    """The same pipeline over a copy of its transformer changed by ``edit(transformer)`` (under no_grad)."""
    other = copy.copy(pipe)
    other.transformer = copy.deepcopy(pipe.transformer)
    with torch.no_grad():
        edit(other.transformer)
    return other


def equal_weights(pipe: DiTFusePipeline) -> DiTFusePipeline:
    """The same model with the selection's activity logit taken out: equal weights for every prompt (what a
    prompt whose tag switches the selection off gets)."""
    def edit(t):
        for h in range(4):  # the selection layer, the last
            t.layers[-1].self_attn.to_k.weight[h * 64:(h + 1) * 64, selection.E_DIM] = 0

    return twin(pipe, edit)


def layer_io(pipe: DiTFusePipeline, index: int, run) -> tuple[torch.Tensor, torch.Tensor]:
    """The hidden states [L, D] (float64) going into and coming out of layer ``index`` in its first pass while
    ``run()`` fuses: the prompt with both images' tokens (the engine calls `transformer.run_block`, not the
    layers' forward)."""
    from ditfuse_core import transformer

    layer, seen, run_block = pipe.transformer.layers[index], {}, transformer.run_block

    def spy(block, h, *args, **kw):
        before = h.clone()
        out = run_block(block, h, *args, **kw)
        if block is layer and not seen:
            seen["io"] = (before[0].double(), out[0][0].double())
        return out

    transformer.run_block = spy
    try:
        run()
    finally:
        transformer.run_block = run_block
    return seen["io"]


def gray(im) -> np.ndarray:
    """Luminance 0.299 R + 0.587 G + 0.114 B of a PIL image, 0–255."""
    return np.asarray(im.convert("RGB"), np.float64) @ np.array([0.299, 0.587, 0.114])

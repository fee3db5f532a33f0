"""Heads whose values or output columns are all zero are skipped (ditfuse_core.attention._active_heads): the
result must be what the full computation gives."""
import numpy as np
import torch
from PIL import Image

from ditfuse_core import examples, transformer
from ditfuse_core.pipeline import DiTFusePipeline


def test_skipping_zero_heads_changes_nothing(monkeypatch):
    torch.set_num_threads(2)
    pipe = DiTFusePipeline.from_pretrained(None, device="cpu")
    attn = pipe.transformer.layers[0].self_attn  # the bundled model's control layer: two heads of five are used
    assert transformer._active_heads(attn, 64).tolist() == [0, 1]
    a, b = [Image.open(p) for p in examples.pair_paths("mff")]
    kw = dict(max_side=256, min_scale=1.0)
    runs = {}
    for skip in (True, False):
        if not skip:
            monkeypatch.setattr(transformer, "_active_heads", lambda attn, hd: None)
        runs[skip] = [np.asarray(pipe.fuse(a, b, task="mff", **kw)[0], np.int16),
                      np.asarray(pipe.control(a, b, adjustment="CONTRAST+", **kw)[0], np.int16)]
    for x, y in zip(runs[True], runs[False]):
        assert np.abs(x - y).max() <= 1


def test_weights_made_under_inference_mode_are_read_too():
    """ComfyUI loads models under torch.inference_mode: such tensors keep no version counter."""
    with torch.inference_mode():
        pipe = DiTFusePipeline.from_pretrained(None, device="cpu")
    assert transformer._active_heads(pipe.transformer.layers[0].self_attn, 64).tolist() == [0, 1]  # control, warm
    assert transformer._active_heads(pipe.transformer.layers[1].self_attn, 64).tolist() == [0, 1, 2, 3]  # + warm
    assert transformer._active_heads(pipe.transformer.layers[2].self_attn, 64) is None

"""Attention runs only over what adds something (ditfuse_core.attention.head_plan): heads whose values or output
columns are all zero are skipped, heads whose logits or values use few of their dims are attended over those only.
The result must be what the full computation gives."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import torch
from PIL import Image

from ditfuse_core import attention, examples, prompts, sampler, transformer
from ditfuse_core.pipeline import DiTFusePipeline
from ditfuse_core.tiny import tiny_transformer, tiny_vae
from ditfuse_core.tokenizer import load_tokenizer


def _full(monkeypatch):
    monkeypatch.setattr(transformer, "head_plan", lambda attn, hd: attention.FULL)


def test_skipping_heads_and_dims_changes_nothing_on_the_bundled_model(monkeypatch):
    torch.set_num_threads(2)
    pipe = DiTFusePipeline.from_pretrained(None, device="cpu")
    a, b = [Image.open(p) for p in examples.pair_paths("mff")]
    kw = dict(max_side=256, min_scale=1.0)
    warm = next(p for p in prompts.PRESETS["ivif"] if " warm " in p)
    runs = {}
    for plan in (True, False):
        if not plan:
            _full(monkeypatch)
        runs[plan] = [np.asarray(pipe.fuse(a, b, task="mff", **kw)[0], np.int16),
                      np.asarray(pipe.fuse(a, b, task="ivif", instruction=warm, **kw)[0], np.int16),
                      np.asarray(pipe.control(a, b, adjustment="CONTRAST+", **kw)[0], np.int16)]
    for x, y in zip(runs[True], runs[False]):
        assert np.abs(x - y).max() <= 1


def test_weights_made_under_inference_mode_are_read_too():
    """ComfyUI loads models under torch.inference_mode: such tensors keep no version counter."""
    with torch.inference_mode():
        pipe = DiTFusePipeline.from_pretrained(None, device="cpu")
    plans = [attention.head_plan(layer.self_attn, 64) for layer in pipe.transformer.layers]
    assert plans[0].heads.tolist() == [0, 1]  # control, warm
    assert plans[1].heads.tolist() == [0, 1, 2, 3]  # neighbourhood + warm
    assert plans[2].heads is None
    # the bundled model's heads read a few dims: its sink head (4) and the averaging heads (whole) in layer 2
    assert [(g.members.tolist(), g.width) for g in plans[2].groups] == [([4], 16), ([0, 1, 2, 3], 64)]


def _sparse_model():
    """hidden 256, 4 heads of 64: head 0 whole; head 1 with logits over 3 rotate-half pairs (dim 5's partner 37
    has a zero q row: RoPE still mixes them) and 10 value dims; head 2 without values; head 3 with logits over
    20 pairs and values over 30 dims."""
    model = tiny_transformer(seed=4, hidden=256, heads=4, layers=2)
    with torch.no_grad():
        for layer in model.layers:
            attn = layer.self_attn
            q, k, v = (w.weight.view(4, 64, -1) for w in (attn.to_q, attn.to_k, attn.to_v))
            keep = torch.zeros(64, dtype=torch.bool)
            keep[[3, 35, 5, 10, 42]] = True
            q[1, ~keep] = 0
            k[1, 10] = k[1, 42] = 0  # pair 10/42: zero in k, so it adds nothing
            v[1, 10:] = 0
            v[2] = 0
            pairs = torch.zeros(64, dtype=torch.bool)
            pairs[:20] = pairs[32:52] = True
            k[3, ~pairs] = 0
            v[3, 30:] = 0
    return model


def test_narrowed_heads_attend_as_whole_ones(monkeypatch):
    model = _sparse_model()
    plan = attention.head_plan(model.layers[0].self_attn, 64)
    assert plan.heads.tolist() == [0, 1, 3]
    widths = {tuple(plan.heads[g.members].tolist()): g.width for g in plan.groups}
    assert widths == {(1,): 16, (3,): 48, (0,): 64}
    head1 = next(g for g in plan.groups if g.width == 16)
    assert sorted(head1.qk.flatten()[:4].tolist()) == [3, 5, 35, 37]

    pipe = DiTFusePipeline(model, tiny_vae(seed=5), load_tokenizer())
    g = torch.Generator().manual_seed(6)
    lats = [torch.randn(1, 4, 16, 16, generator=g) for _ in range(2)]
    cond = pipe.branches(prompts.fusion_prompt("ivif"), lats)
    noise = sampler.initial_noise(7, 1, (4, 16, 16))
    run = dict(steps=2, cfg=2.0, img_cfg=1.6)
    narrow = [sampler.sample(model, [cond], noise, batch_branches=b, **run) for b in (True, False)]
    uncached = model.forward_branch(noise, torch.tensor([0.3]), cond.cond, cond.image_latents)
    _full(monkeypatch)
    whole = [sampler.sample(model, [cond], noise, batch_branches=b, **run) for b in (True, False)]
    for x, y in zip(narrow, whole):
        assert (x - y).abs().max().item() < 1e-5
    ref = model.forward_branch(noise, torch.tensor([0.3]), cond.cond, cond.image_latents)
    assert (uncached - ref).abs().max().item() < 1e-5
    assert (whole[0] - noise).abs().max().item() > 0.1  # the model does something

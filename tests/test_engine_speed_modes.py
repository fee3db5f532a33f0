"""Engine options for speed and for little GPU memory (issue #27): on a CPU every placement (KV cache on the CPU,
blocks offloaded) gives the default's latents bit for bit, the fp8 cache stays within a stated tolerance, the
packed cache holds no padding, the prefill costs at most two cached steps (counted FLOPs), and bad values are
refused before any work. The CUDA checks (same latents, less VRAM) are skipped without a GPU."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.flop_counter import FlopCounterMode

from ditfuse_core import prompts, sampler
from ditfuse_core import transformer as T
from ditfuse_core.pipeline import DiTFusePipeline
from ditfuse_core.tiny import tiny_transformer, tiny_vae
from ditfuse_core.tokenizer import load_tokenizer

RUN = dict(steps=3, cfg=2.0, img_cfg=1.6)
PLACEMENTS = [dict(kv_cache="cpu"), dict(offload="kv_cpu"), dict(offload="layers"),
              dict(offload="layers", kv_cache="device")]
FP8_TOLERANCE = 5e-3  # max |Δ| of the latents against the exact cache here (measured 1.0e-3; a bf16 model: 1.7e-2)


def _setup(device="cpu", dtype=torch.float32, side=16):
    pipe = DiTFusePipeline(tiny_transformer(seed=11).to(device, dtype), tiny_vae(seed=12).to(device), load_tokenizer())
    g = torch.Generator().manual_seed(3)
    lats = [torch.randn(1, 4, side, side, generator=g) for _ in range(2)]
    # IVIF: the instruction branch is shorter than the negative prompt, the image branch longer: three lengths
    cond = pipe.branches(prompts.fusion_prompt("ivif"), lats)
    return pipe, cond, sampler.initial_noise(5, 1, (4, side, side))


@pytest.fixture(scope="module")
def setup():
    return _setup()


def _rows(cond):
    return [cond.cond, cond.uncond, cond.img], [cond.image_latents] * 3


def test_every_placement_gives_the_default_latents_bit_for_bit(setup):
    pipe, cond, noise = setup
    model = pipe.transformer
    try:
        for batched in (True, False):
            ref = sampler.sample(model, [cond], noise, batch_branches=batched, **RUN)
            for kw in PLACEMENTS:
                assert torch.equal(sampler.sample(model, [cond], noise, batch_branches=batched, **RUN, **kw), ref), kw
        # "auto" is batched on a CPU; batched and one by one are the same computation up to fp32 rounding
        auto = sampler.sample(model, [cond], noise, **RUN)
        assert torch.equal(auto, sampler.sample(model, [cond], noise, batch_branches=True, **RUN))
        one_by_one = sampler.sample(model, [cond], noise, batch_branches=False, **RUN)
        assert (auto - one_by_one).abs().max().item() < 1e-5
    finally:
        model.onload_layers()


def test_pipeline_fuse_takes_the_options(setup):
    pipe, _, _ = setup
    rng = np.random.default_rng(0)
    a, b = (Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)) for _ in range(2))
    ref = np.asarray(pipe.fuse(a, b, seed=1, steps=2, max_side=64)[0])
    for kw in (dict(offload="layers"), dict(kv_cache="cpu", batch_branches=False)):
        assert np.array_equal(np.asarray(pipe.fuse(a, b, seed=1, steps=2, max_side=64, **kw)[0]), ref), kw
    pipe.transformer.onload_layers()
    with pytest.raises(ValueError, match="offload must be one of"):
        pipe.fuse(a, b, steps=2, max_side=64, offload="gpu")
    with pytest.raises(ValueError, match="kv_cache must be one of"):
        pipe.fuse(a, b, steps=2, max_side=64, kv_cache="fp16")
    with pytest.raises(ValueError, match="contradicts"):
        pipe.fuse(a, b, steps=2, max_side=64, offload="kv_cpu", kv_cache="fp8")
    with pytest.raises(ValueError, match="batch_branches must be"):
        pipe.fuse(a, b, steps=2, max_side=64, batch_branches="yes")


def test_fp8_cache_stays_close_and_takes_a_quarter_of_fp32(setup):
    pipe, cond, noise = setup
    model = pipe.transformer
    exact = sampler.sample(model, [cond], noise, **RUN)
    fp8 = sampler.sample(model, [cond], noise, kv_cache="fp8", **RUN)
    d = (fp8 - exact).abs().max().item()
    assert 0 < d < FP8_TOLERANCE, d
    rows, imgs = _rows(cond)
    full = model.prefill(rows, imgs, 64)
    small = model.prefill(rows, imgs, 64, kv_cache="fp8")
    assert small.keys[0].dtype == torch.float8_e4m3fn
    scales = 2 * len(model.layers) * 3 * model.config.num_key_value_heads * 4
    assert small.nbytes - scales == full.nbytes // 4


def test_prefill_packs_rows_without_padding_and_a_padded_cache_steps_the_same(setup):
    pipe, cond, noise = setup
    model = pipe.transformer
    rows, imgs = _rows(cond)
    lengths = [r.length for r in rows]
    assert len(set(lengths)) == 3
    cache = model.prefill(rows, imgs, 64)
    c = model.config
    hd = c.hidden_size // c.num_attention_heads
    assert cache.keys[0].numel() == c.num_key_value_heads * sum(lengths) * hd
    assert cache.nbytes == 2 * len(model.layers) * c.num_key_value_heads * sum(lengths) * hd * 4
    # the right-padded layout (what tests/test_cancel.py builds) steps to the same velocities
    lmax = max(lengths)
    padded = T.KVCache([], [], None, lengths)
    for store, out in ((cache.keys, padded.keys), (cache.values, padded.values)):
        for layer in range(len(model.layers)):
            t = torch.zeros(3, c.num_key_value_heads, lmax, hd)
            for b in range(3):
                t[b, :, : lengths[b]] = cache._span(store, layer, b)[0]
            out.append(t)
    x = noise.expand(3, -1, -1, -1)
    t = torch.full((3,), 0.25)
    assert torch.equal(model.step(x, t, padded), model.step(x, t, cache))


def test_prefill_costs_at_most_two_cached_steps_in_flops():
    """Issue #27: the prefill may cost no more than two cached steps. FLOPs at the medium benchmark's
    proportions (two 512 px inputs: 1024 tokens each, 1024 output tokens), a thin model."""
    model = tiny_transformer(seed=2, hidden=64, layers=2, pos_embed_max_size=64)
    pipe = DiTFusePipeline(model, tiny_vae(seed=2), load_tokenizer())
    lats = [torch.randn(1, 4, 64, 64) for _ in range(2)]
    cond = pipe.branches(prompts.fusion_prompt("ivif"), lats)
    rows, imgs = _rows(cond)
    with FlopCounterMode(display=False) as fc:
        cache = model.prefill(rows, imgs, 32 * 32)
    prefill = fc.get_total_flops()
    with FlopCounterMode(display=False) as fc:
        model.step(torch.randn(3, 4, 64, 64), torch.zeros(3), cache)
    assert prefill <= 2 * fc.get_total_flops(), (prefill, fc.get_total_flops())


def test_offload_layers_is_a_no_op_on_a_cpu(setup):
    model = setup[0].transformer
    before = {n: p.data_ptr() for n, p in model.named_parameters()}
    model.offload_layers()
    assert not model.layers_offloaded
    assert before == {n: p.data_ptr() for n, p in model.named_parameters()}


# ---- CUDA (skipped here) --------------------------------------------------------------------------------
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")


@cuda
def test_cuda_placements_give_the_same_latents_with_less_vram():
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        pipe, cond, noise = _setup("cuda", side=32)
        model = pipe.transformer

        def run(**kw):
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            x = sampler.sample(model, [cond], noise, **RUN, **kw)
            torch.cuda.synchronize()
            return x, torch.cuda.max_memory_allocated() - base

        ref, peak = run()
        one, peak_one = run(batch_branches=False)
        assert (one - ref).abs().max().item() < 1e-5
        kv, peak_kv = run(offload="kv_cpu")
        assert (kv - ref).abs().max().item() < 1e-6 and peak_kv < peak
        fp8, _ = run(kv_cache="fp8")
        assert (fp8 - ref).abs().max().item() < FP8_TOLERANCE
        layers, _ = run(offload="layers")
        assert model.layers_offloaded and all(p.device.type == "cpu" for p in model.layers.parameters())
        assert model.embed_tokens.weight.device.type == "cuda"
        assert (layers - ref).abs().max().item() < 1e-6
        model.onload_layers()
        assert all(p.device.type == "cuda" for p in model.parameters())
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old

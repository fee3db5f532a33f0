"""The engine against diffusers' OmniGenPipeline and against itself (cache, branch batching, RoPE)."""
import os
from types import SimpleNamespace

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
from PIL import Image

from ditfuse_core import prompts, sampler
from ditfuse_core.pipeline import DiTFusePipeline
from ditfuse_core.sequence import build_branch
from ditfuse_core.tiny import tiny_transformer, tiny_vae
from ditfuse_core.tokenizer import load_tokenizer


def _pair(w=64, h=48, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    b = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    return Image.fromarray(a), Image.fromarray(b)


@pytest.fixture(scope="module")
def pipe():
    return DiTFusePipeline(tiny_transformer(seed=1), tiny_vae(seed=2), load_tokenizer())


def _torchvision_standin():
    """diffusers' OmniGen processor needs four torchvision transforms; PyPI torchvision does not load beside
    the CPU torch wheel, so the test supplies equivalent ones."""
    class Compose:
        def __init__(self, fns):
            self.fns = fns

        def __call__(self, x):
            for f in self.fns:
                x = f(x)
            return x

    def to_tensor():
        return lambda im: torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0).permute(2, 0, 1).contiguous()

    def normalize(mean, std, inplace=False):
        m = torch.tensor(mean)[:, None, None]
        s = torch.tensor(std)[:, None, None]
        return lambda t: (t - m) / s

    return SimpleNamespace(Compose=Compose, Lambda=lambda f: f, ToTensor=to_tensor, Normalize=normalize)


def _hf_tokenizer():
    from transformers import PreTrainedTokenizerFast

    from ditfuse_core.tokenizer import BUNDLED

    return PreTrainedTokenizerFast(tokenizer_file=str(BUNDLED), bos_token="<s>", eos_token="<|endoftext|>",
                                   pad_token="<|endoftext|>", unk_token="<unk>")


def _ours(pipe, a, b, noise, steps, cfg=2.0, img_cfg=1.6, **kw):
    pix, _ = pipe.preprocess([a, b], max_side=max(a.size))
    lats = [pipe.encode(p, sample=False) for p in pix]
    cond = pipe.condition(prompts.fusion_prompt("ivif"), lats)
    return sampler.sample(pipe.transformer, [cond], noise, steps=steps, cfg=cfg, img_cfg=img_cfg, **kw)


def test_latents_equal_diffusers_omnigen_pipeline(pipe):
    from diffusers import FlowMatchEulerDiscreteScheduler, OmniGenPipeline
    import diffusers.pipelines.omnigen.pipeline_omnigen as pipe_mod
    import diffusers.pipelines.omnigen.processor_omnigen as proc

    proc.transforms = _torchvision_standin()
    pipe_mod.OmniGenMultiModalProcessor = proc.OmniGenMultiModalProcessor  # imported only with torchvision
    # The authors' schedule t = 0, 1/N, …, 1 with t fed unscaled, in diffusers' terms.
    sched = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1, invert_sigmas=True)
    ref = OmniGenPipeline(transformer=pipe.transformer, vae=pipe.vae, tokenizer=_hf_tokenizer(), scheduler=sched)

    def encode_mean(pixel_values, device=None, dtype=None):  # posterior mean on both sides
        return [pipe.vae.encode(p).latent_dist.mode() * pipe.vae.config.scaling_factor for p in pixel_values]

    ref.encode_input_images = encode_mean
    a, b = _pair()
    noise = sampler.initial_noise(7, 1, (4, 6, 8))
    with torch.no_grad():
        expected = ref(prompts.fusion_prompt("ivif"), input_images=[a, b], height=48, width=64,
                       num_inference_steps=4, guidance_scale=2.0, img_guidance_scale=1.6,
                       use_input_image_size_as_output=True, latents=noise.clone(), output_type="latent").images
    got = _ours(pipe, a, b, noise, steps=4)
    assert got.shape == expected.shape
    assert (got - expected).abs().max().item() < 1e-4


def test_sequences_equal_diffusers_processor(pipe):
    import diffusers.pipelines.omnigen.processor_omnigen as proc

    proc.transforms = _torchvision_standin()
    p = proc.OmniGenMultiModalProcessor(pipe.tokenizer)
    text = prompts.fusion_prompt("mef", "keep the sky blue")
    imgs = [torch.zeros(3, 48, 64), torch.zeros(3, 32, 32)]
    ref = p.process_multi_modal_prompt(text, imgs)
    ours = build_branch(pipe.tokenizer, prompts.wrap(text), [12, 4])
    assert ours.input_ids.tolist() == ref["input_ids"]
    assert [list(s) for s in ours.image_spans] == ref["image_sizes"]


def test_kv_cache_equals_full_sequence(pipe):
    a, b = _pair(seed=3)
    noise = sampler.initial_noise(0, 1, (4, 6, 8))
    cached = _ours(pipe, a, b, noise, steps=4, use_cache=True)
    full = _ours(pipe, a, b, noise, steps=4, use_cache=False)
    assert (cached - full).abs().max().item() < 1e-5


def test_each_branch_uses_rope_factors_of_its_own_length():
    # OmniGen-v1's 4096-token window. Two 640×640 px inputs give 1600 tokens each: the image branches
    # (≈ 4800 tokens with 1600 output tokens) take the long factors, the text-only negative branch stays short.
    model = tiny_transformer(seed=4, layers=1)
    assert model.config.original_max_position_embeddings == 4096
    pipe = DiTFusePipeline(model, tiny_vae(seed=2), load_tokenizer())
    g = torch.Generator().manual_seed(5)
    lats = [torch.randn(1, 4, 80, 80, generator=g), torch.randn(1, 4, 80, 80, generator=g)]
    cond = pipe.condition(prompts.fusion_prompt("ivif"), lats)
    n_out = 40 * 40
    assert model.use_long_rope(cond.cond.length + 1 + n_out)
    assert model.use_long_rope(cond.img.length + 1 + n_out)
    assert not model.use_long_rope(cond.uncond.length + 1 + n_out)
    noise = sampler.initial_noise(1, 1, (4, 80, 80))
    run = dict(steps=2, cfg=2.0, img_cfg=1.6)
    batched = sampler.sample(model, [cond], noise, batch_branches=True, **run)
    sequential = sampler.sample(model, [cond], noise, batch_branches=False, **run)
    uncached = sampler.sample(model, [cond], noise, use_cache=False, **run)
    assert (batched - sequential).abs().max().item() < 1e-5
    assert (batched - uncached).abs().max().item() < 1e-5
    # One choice for all rows (a padded batch with a shared RoPE: all long) gives a different image.
    model.use_long_rope = lambda total_length: True
    all_long = sampler.sample(model, [cond], noise, **run)
    del model.use_long_rope
    assert (batched - all_long).abs().max().item() > 1e-3


def test_zero_weight_branches_are_skipped_exactly(pipe):
    assert sampler.branch_weights(1.0, 1.0) == {"cond": 1.0}
    assert set(sampler.branch_weights(2.0, 1.0)) == {"cond", "img"}
    a, b = _pair(seed=6)
    noise = sampler.initial_noise(2, 1, (4, 6, 8))
    pix, _ = pipe.preprocess([a, b], max_side=64)
    cond = pipe.condition(prompts.fusion_prompt("mff"), [pipe.encode(p, sample=False) for p in pix])
    only_cond = sampler.sample(pipe.transformer, [cond], noise, steps=2, cfg=1.0, img_cfg=1.0)
    # Reference: plain conditional Euler without guidance, uncached.
    x = noise.clone()
    for s, t in enumerate(sampler.timesteps(2)[:-1]):
        v = pipe.transformer.forward_branch(x, t[None], cond.cond, cond.image_latents)
        x = x + 0.5 * v
    assert (only_cond - x).abs().max().item() < 1e-5

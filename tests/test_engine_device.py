"""The engine on an accelerator (skipped where none is present, as in CI): exact cache there too, and the
same seed gives the same image as on the CPU."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
from PIL import Image

from ditfuse_core import prompts, sampler
from ditfuse_core.pipeline import DiTFusePipeline
from ditfuse_core.tiny import tiny_transformer, tiny_vae
from ditfuse_core.tokenizer import load_tokenizer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device here")


def _pipe(device, dtype=torch.float32):
    return DiTFusePipeline(tiny_transformer(seed=31).to(device, dtype), tiny_vae(seed=32).to(device), load_tokenizer())


def _pair(seed=0):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)) for _ in range(2)]


@pytest.fixture(autouse=True)
def _no_tf32():
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


def test_cache_is_exact_on_cuda():
    pipe = _pipe("cuda")
    pix, _ = pipe.preprocess(_pair(), 128)
    cond = pipe.branches(prompts.fusion_prompt("ivif"), [pipe.encode(p, sample=False) for p in pix])
    noise = sampler.initial_noise(0, 1, (4, 12, 16))
    a = sampler.sample(pipe.transformer, [cond], noise, steps=4, cfg=2.0, img_cfg=1.6, use_cache=True)
    b = sampler.sample(pipe.transformer, [cond], noise, steps=4, cfg=2.0, img_cfg=1.6, use_cache=False)
    c = sampler.sample(pipe.transformer, [cond], noise, steps=4, cfg=2.0, img_cfg=1.6, batch_branches=False)
    assert a.device.type == "cuda"
    assert (a - b).abs().max().item() < 1e-4
    assert (a - c).abs().max().item() < 1e-4


def test_same_seed_same_image_on_cpu_and_cuda():
    a, b = _pair(1)
    cpu = _pipe("cpu").fuse(a, b, seed=5, steps=4, max_side=128)[0]
    gpu = _pipe("cuda").fuse(a, b, seed=5, steps=4, max_side=128)[0]
    diff = np.abs(np.asarray(cpu, dtype=float) - np.asarray(gpu, dtype=float))
    assert diff.max() <= 2, diff.max()  # 8-bit output: at most rounding apart


def test_bf16_on_cuda_runs_and_stays_close():
    a, b = _pair(2)
    ref = _pipe("cuda").fuse(a, b, seed=1, steps=4, max_side=128)[0]
    low = _pipe("cuda", torch.bfloat16).fuse(a, b, seed=1, steps=4, max_side=128)[0]
    diff = np.abs(np.asarray(ref, dtype=float) - np.asarray(low, dtype=float)).mean()
    assert diff < 8, diff


def test_the_bundled_model_on_cuda_gives_the_cpu_fusion():
    """dtype auto runs the constructed bundled model in fp32 on the GPU too (its ditfuse.json; auto would be
    bf16 there for other models, and bf16 turns this one's output into noise)."""
    from pathlib import Path

    ex = Path(__file__).resolve().parents[1] / "example_images"
    a, b = (Image.open(ex / f"mff_{k}.png").convert("RGB").resize((256, 256)) for k in ("1_far_focus", "2_near_focus"))
    cpu = DiTFusePipeline.from_pretrained(device="cpu").fuse(a, b, task="mff")[0]
    pipe = DiTFusePipeline.from_pretrained(device="cuda")
    assert pipe.dtype == torch.float32 and pipe.device.type == "cuda"
    gpu = pipe.fuse(a, b, task="mff")[0]
    diff = np.abs(np.asarray(cpu, dtype=float) - np.asarray(gpu, dtype=float))
    assert diff.max() <= 2, diff.max()

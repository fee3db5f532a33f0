"""The memory a sampling call declares to its host (ComfyUI frees that much before the call): it grows with the
working size and with the guidance branches that run, and at OmniGen-v1's real size it agrees with the KV cache
computed by hand."""
from types import SimpleNamespace

import torch

from ditfuse_core.memory import SamplingShape, pipeline_sampling_bytes, sampling_bytes

REAL = SimpleNamespace(hidden_size=3072, num_layers=32, num_attention_heads=32, num_key_value_heads=32,
                       intermediate_size=8192, in_channels=4)


def test_grows_with_resolution_and_branches():
    at = lambda side, branches=3, batched=True: sampling_bytes(  # noqa: E731
        REAL, SamplingShape(side, side, 2, branches, batched), torch.bfloat16)
    assert at(512) < at(768) < at(1024) < at(1536)
    assert at(1024, 1) < at(1024, 2) < at(1024, 3)
    assert at(1024, 3, batched=False) < at(1024, 3)  # batched rows are padded to the longest


def test_real_size_kv_cache_matches_the_hand_count():
    """cond + img_cond at 1024² in bf16: 32 layers × (K, V) × 3072 × 2 bytes × their ≈ 16.6 k condition tokens
    ≈ 6.5 GB (the issue's figure); with the negative prompt too, sequentially."""
    two = sampling_bytes(REAL, SamplingShape(1024, 1024, 2, 2, batched=False), torch.bfloat16)
    kv = 32 * 2 * 3072 * 2 * (2 * 2 * 4096 + 160 + 40)
    assert kv / 1e9 == __import__("pytest").approx(6.5, abs=0.1)
    assert kv < two < kv + 5e9  # plus the largest activation: the SDXL VAE decode at 1024², 4.6 GB in bf16


def test_the_pipeline_counts_the_branches_its_settings_run():
    from ditfuse_core.pipeline import DiTFusePipeline

    pipe = DiTFusePipeline.from_pretrained()  # the bundled model: cfg = img_cfg = 1 by default → one branch
    one = pipeline_sampling_bytes(pipe, 256, 256)
    three = pipeline_sampling_bytes(pipe, 256, 256, cfg=2.0, img_cfg=1.6)
    assert 0 < one < three < pipeline_sampling_bytes(pipe, 512, 512, cfg=2.0, img_cfg=1.6)

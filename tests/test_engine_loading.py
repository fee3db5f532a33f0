"""Model folders (original OmniGen-v1 and diffusers layouts) and the DiTFuse LoRA."""
import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
from safetensors.torch import save_file

from ditfuse_core import lora, prompts, sampler
from ditfuse_core.checkpoint import detect_format, load_transformer
from ditfuse_core.pipeline import DiTFusePipeline
from ditfuse_core.tiny import tiny_vae
from ditfuse_core.tokenizer import load_tokenizer
from original_format import original_state_dict, save_both_layouts, save_original_folder

RANK, ALPHA = 4, 8  # alpha ≠ rank, so the alpha/r scale is exercised


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    model, vae = save_both_layouts(root)
    return root, model, vae


def _velocity(model, seed=0):
    """One cached velocity evaluation with two image inputs on all three branches."""
    pipe = DiTFusePipeline(model, tiny_vae(seed=12), load_tokenizer())
    g = torch.Generator().manual_seed(seed)
    lats = [torch.randn(1, 4, 6, 8, generator=g), torch.randn(1, 4, 6, 8, generator=g)]
    cond = pipe.branches(prompts.fusion_prompt("ivif"), lats)
    noise = sampler.initial_noise(seed, 1, (4, 6, 8))
    return sampler.sample(model, [cond], noise, steps=2, cfg=2.0, img_cfg=1.6)


def test_formats_are_detected(folders):
    root, _, _ = folders
    assert detect_format(root / "diffusers") == "diffusers"
    assert detect_format(root / "original") == "original"
    with pytest.raises(FileNotFoundError, match="not a DiTFuse/OmniGen model folder"):
        detect_format(root)


def test_original_folder_gives_same_outputs_as_diffusers_folder(folders):
    root, model, _ = folders
    a = load_transformer(root / "original")
    b = load_transformer(root / "diffusers")
    for k, v in b.state_dict().items():
        assert torch.equal(a.state_dict()[k], v), k
    assert torch.equal(_velocity(a), _velocity(b))
    assert torch.equal(_velocity(a), _velocity(model))


def test_whole_pipeline_loads_from_both_layouts(folders):
    root, _, _ = folders
    for name in ("original", "diffusers"):
        pipe = DiTFusePipeline.from_pretrained(root / name, dtype="fp32")
        assert pipe.token_pixels == 16
        assert pipe.defaults["steps"] == 50  # no ditfuse.json defaults → the authors' settings


def _random_ditfuse_adapter(model, folder, seed=5):
    """A LoRA in the published DiTFuse naming: fused qkv_proj (B has 3 blocks of rows) and o_proj."""
    g = torch.Generator().manual_seed(seed)
    d = model.config.hidden_size
    kv = model.config.num_key_value_heads * (d // model.config.num_attention_heads)
    state = {}
    for i in range(model.config.num_layers):
        p = f"base_model.model.llm.layers.{i}.self_attn."
        state[p + "qkv_proj.lora_A.weight"] = torch.randn(RANK, d, generator=g) * 0.1
        state[p + "qkv_proj.lora_B.weight"] = torch.randn(d + 2 * kv, RANK, generator=g) * 0.1
        state[p + "o_proj.lora_A.weight"] = torch.randn(RANK, d, generator=g) * 0.1
        state[p + "o_proj.lora_B.weight"] = torch.randn(d, RANK, generator=g) * 0.1
    folder.mkdir(parents=True, exist_ok=True)
    save_file(state, str(folder / "adapter_model.safetensors"))
    (folder / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "r": RANK, "lora_alpha": ALPHA, "target_modules": ["qkv_proj", "o_proj"]}))
    return state


def test_lora_equals_hand_merged_fused_weights(folders, tmp_path):
    root, model, vae = folders
    adapter = _random_ditfuse_adapter(model, tmp_path / "lora")
    # By hand, in the ORIGINAL layout: W_qkv += B·A·alpha/r, W_o += B·A·alpha/r.
    merged = original_state_dict(model)
    for i in range(model.config.num_layers):
        for proj in ("qkv_proj", "o_proj"):
            a = adapter[f"base_model.model.llm.layers.{i}.self_attn.{proj}.lora_A.weight"]
            b = adapter[f"base_model.model.llm.layers.{i}.self_attn.{proj}.lora_B.weight"]
            merged[f"llm.layers.{i}.self_attn.{proj}.weight"] += (b @ a) * (ALPHA / RANK)
    expected = _velocity(load_transformer(save_original_folder(tmp_path / "merged", model, vae, merged)))

    ours = load_transformer(root / "diffusers")
    lora.load_lora(ours, tmp_path / "lora")
    got = _velocity(ours)
    assert (got - expected).abs().max().item() < 1e-5

    base = _velocity(load_transformer(root / "diffusers"))
    assert (got - base).abs().max().item() > 1e-3  # the adapter really changes the model

    lora.set_strength(ours, 0.0)
    assert torch.equal(_velocity(ours), base)
    lora.set_strength(ours, 1.0)

    before = {k: v.clone() for k, v in ours.state_dict().items() if "base_layer" in k}
    lora.merge(ours)
    assert (_velocity(ours) - expected).abs().max().item() < 1e-5
    lora.unmerge(ours)
    for k, v in ours.state_dict().items():
        if k in before:
            assert torch.equal(v, before[k]), f"{k} not restored bit-exactly"
    assert torch.equal(_velocity(ours), got)


def test_lora_saves_and_loads_in_diffusers_naming(folders, tmp_path):
    root, model, _ = folders
    _random_ditfuse_adapter(model, tmp_path / "lora", seed=9)
    a = load_transformer(root / "diffusers")
    lora.load_lora(a, tmp_path / "lora", strength=0.7)
    out = lora.save_lora(a, tmp_path / "saved")
    from safetensors.torch import load_file

    keys = list(load_file(str(out / "adapter_model.safetensors")))
    assert all(k.startswith("transformer.layers.") and ".self_attn.to_" in k for k in keys)
    b = load_transformer(root / "diffusers")
    lora.load_lora(b, out, strength=0.7)
    assert torch.equal(_velocity(a), _velocity(b))


def test_pipeline_applies_lora_strength(folders, tmp_path):
    root, model, _ = folders
    _random_ditfuse_adapter(model, tmp_path / "lora")
    pipe = DiTFusePipeline.from_pretrained(root / "diffusers", lora=tmp_path / "lora", lora_strength=0.0)
    base = DiTFusePipeline.from_pretrained(root / "diffusers")
    assert torch.equal(_velocity(pipe.transformer), _velocity(base.transformer))

"""Weight storage modes (weights fp32/bf16/fp16/fp8 apart from the compute dtype): memory, closeness to bf16,
a LoRA on an fp8 base, streaming conversion from an original-layout file, the CLI option, auto unchanged."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch
from ditfuse_core import cli, lora, weight_storage as ws
from ditfuse_core.checkpoint import load_transformer
from ditfuse_core.examples import pair_paths
from original_format import save_both_layouts
from test_engine_loading import _random_ditfuse_adapter, _velocity

F32, BF16 = torch.float32, torch.bfloat16


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    model, _ = save_both_layouts(root)
    return root, model


def _state(model):
    return {k: v for k, v in model.state_dict().items()}


def test_fp8_halves_the_stored_weights_and_stays_close_to_bf16(folders):
    root, model = folders
    bf16 = load_transformer(root / "original", BF16)
    fp8 = load_transformer(root / "original", BF16, weights="fp8")
    stored = [m for n, m in fp8.named_modules() if ws.is_stored(n)]
    assert len(stored) == 6 * model.config.num_layers and all(isinstance(m, ws.StoredLinear) for m in stored)
    assert all(m.weight.dtype == ws.FP8 for m in stored)
    assert fp8.embed_tokens.weight.dtype == BF16 and fp8.proj_out.weight.dtype == BF16 and fp8.dtype == BF16
    ratio = ws.stored_bytes(fp8)["stored"] / ws.stored_bytes(bf16)["stored"]
    assert ratio <= 0.55, ratio
    # the state dict (what ComfyUI's memory manager sums) holds the fp8 bytes, not an upcast copy
    saved = ws.stored_bytes(bf16)["stored"] - ws.stored_bytes(fp8)["stored"]
    assert ws.stored_bytes(bf16)["total"] - ws.stored_bytes(fp8)["total"] == saved
    ref, a, b = _velocity(model), _velocity(fp8).float(), _velocity(bf16).float()
    # measured 0.015 (fp8 vs bf16) with bf16 itself 0.014 from fp32, on outputs up to 3.2
    assert (a - b).abs().max().item() < 0.05
    assert (a - ref).abs().max().item() < 0.05


def test_storage_modes_under_fp32_compute(folders):
    root, model = folders
    ref = _velocity(model)
    for weights, bound in (("bf16", 2e-3), ("fp16", 3e-4), ("fp8", 0.05)):
        m = load_transformer(root / "original", F32, weights=weights)
        assert m.layers[0].mlp.down_proj.weight.dtype == ws.storage_dtype(weights, F32)
        assert m.embed_tokens.weight.dtype == F32
        assert 0 < (_velocity(m) - ref).abs().max().item() < bound, weights


def test_weights_auto_is_unchanged(folders):
    root, model = folders
    for fmt in ("original", "diffusers"):
        for weights in ("auto", None, "fp32"):
            m = load_transformer(root / fmt, F32, weights=weights)
            assert not any(isinstance(x, ws.StoredLinear) for x in m.modules())
            assert all(torch.equal(v, model.state_dict()[k]) for k, v in m.state_dict().items())
            assert torch.equal(_velocity(m), _velocity(model))
    with pytest.raises(ValueError, match="unknown weights"):
        load_transformer(root / "original", F32, weights="int4")


def test_streaming_conversion_equals_converting_after_load(folders):
    root, _ = folders
    after = _state(ws.convert_model(load_transformer(root / "original", F32), "fp8"))
    for fmt in ("original", "diffusers"):
        for dt in (F32, BF16):
            streamed = _state(load_transformer(root / fmt, dt, weights="fp8"))
            assert streamed.keys() == after.keys()
            for k, v in after.items():
                # fp8 weights come straight from the file's fp32 values (never rounded to bf16 on the way)
                want = v if v.dtype == ws.FP8 or k.endswith("weight_scale") else v.to(dt)
                assert want.dtype == streamed[k].dtype and torch.equal(want.float(), streamed[k].float()), (fmt, k)


def test_fp8_scale_is_a_power_of_two_and_upcast_is_exact():
    w = torch.randn(64, 32) * 3e-3
    w[0, 0] = 0.7  # amax 0.7 → scale 2^-9
    q, s = ws.quantise_fp8(w)
    assert q.dtype == ws.FP8 and s.item() == 2.0**-9
    deq = q.float() * s
    assert (deq - w).abs().max().item() <= 0.7 * 2**-4  # e4m3: 3 mantissa bits
    assert torch.equal(deq.to(BF16).float(), deq)  # fp8 × 2^k is exact in bf16: the upcast adds no rounding


def test_lora_on_fp8_equals_lora_on_the_dequantised_model(folders, tmp_path):
    root, model = folders
    _random_ditfuse_adapter(model, tmp_path / "lora")
    fp8 = load_transformer(root / "original", F32, weights="fp8")
    # the same model with plain fp32 Linear layers holding the fp8 weights' exact values
    deq = load_transformer(root / "original", F32)
    for name, m in fp8.named_modules():
        if isinstance(m, ws.StoredLinear):
            with torch.no_grad():
                deq.get_submodule(name).weight.copy_(m.dequantised())
    base = _velocity(fp8)
    assert torch.equal(base, _velocity(deq))
    lora.load_lora(fp8, tmp_path / "lora")
    lora.load_lora(deq, tmp_path / "lora")
    layer = fp8.layers[0].self_attn.to_q
    assert layer.base_layer.weight.dtype == ws.FP8 and layer.lora_A[lora.ADAPTER].weight.dtype == F32
    with_lora = _velocity(fp8)
    assert (with_lora - _velocity(deq)).abs().max().item() < 1e-5
    assert (with_lora - base).abs().max().item() > 1e-3
    lora.set_strength(fp8, 0.5)
    lora.set_strength(deq, 0.5)
    assert (_velocity(fp8) - _velocity(deq)).abs().max().item() < 1e-5
    lora.set_strength(fp8, 0.0)
    assert torch.equal(_velocity(fp8), base)
    with pytest.raises(RuntimeError, match="cannot be merged into fp8"):
        lora.merge(fp8)
    assert ws.stored_bytes(fp8)["stored"] == ws.stored_bytes(load_transformer(root / "original", F32,
                                                                              weights="fp8"))["stored"]


def test_cli_weights_fp8_runs(tmp_path):
    one, two = pair_paths("ivif")
    out = tmp_path / "fused.png"
    rc = cli.main(["fuse", str(one), str(two), "-o", str(out), "--weights", "fp8", "--max-side", "64"])
    assert rc == 0 and out.is_file()

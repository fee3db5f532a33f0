"""In-process ComfyUI checks (headless PromptExecutor) of the DiTFuse pack.

Run by tests/test_comfy_executor.py in a separate Python process (ComfyUI's module names — `nodes`, `utils`,
`app`, ... — and its torchvision stand-in must not leak into the rest of the test suite). By hand:

    .venv/bin/python -m pytest -q tests/comfy_inprocess_checks.py
"""
from __future__ import annotations

import json

import pytest
import torch

import sys

import comfy_harness as H

sys.path.insert(0, str(H.ROOT / "scripts"))

if H.comfy_missing_reason():
    pytest.skip(H.comfy_missing_reason(), allow_module_level=True)

C = H.InProcessComfy.get()
A = H.pack_adapters()
from ditfuse_core import vae as vae_mod  # noqa: E402  (after the pack has put the repo on the path)

BUNDLED = A.bundled_choice()
_VAE = vae_mod.load_vae(A.bundled_model_path() / "vae", torch.float32, "cpu")  # the bundled model's
LATENT_CH, VAE_F = _VAE.config.latent_channels, vae_mod.downsample_factor(_VAE)


def loader(**over):
    return {"class_type": "DiTFuseModelLoader",
            "inputs": {"model": BUNDLED, "lora": "none", "lora_strength": 1.0, "dtype": "auto", "offload": True,
                       **over}}


def sampling(**over):
    return {"seed": 0, "steps": 2, "cfg": 2.0, "img_cfg": 1.6, **over}


def out(res, nid, slot=0):
    """The value of output `slot` of node `nid` (the executor caches a list per output slot)."""
    return res[nid][slot][0]


def check_image(t, batch=None, size=None):
    assert isinstance(t, torch.Tensor) and t.dim() == 4 and t.shape[-1] == 3, getattr(t, "shape", t)
    if batch is not None:
        assert t.shape[0] == batch
    if size is not None:
        assert tuple(t.shape[1:3]) == size
    assert torch.isfinite(t).all()
    assert 0.0 <= float(t.min()) and float(t.max()) <= 1.0
    for i in range(t.shape[0]):
        assert float(t[i].std()) > 1e-3, "constant image"


# ---- workflows ---------------------------------------------------------------------------------------------
def test_workflow_files_are_generated():
    import make_workflows  # scripts/, on sys.path via conftest-free insert below

    if C.comfyui_version != "0.3.75":  # core nodes gain outputs (SaveImage/PreviewImage: `images`, 0.26, b0f9e326)
        pytest.skip(f"workflows are generated against CI's ComfyUI 0.3.75, this is {C.comfyui_version}")

    names = list(make_workflows.workflows(BUNDLED))
    assert sorted(names) == H.workflow_names()
    for name, spec in make_workflows.workflows(BUNDLED).items():
        ui, api = make_workflows.build(name, spec, C.object_info)
        assert json.dumps(ui, indent=2) + "\n" == (H.WORKFLOWS / f"{name}.json").read_text(), \
            f"{name}.json is stale: run scripts/make_workflows.py"
        assert api == H.load_api(name), f"api/{name}.json is stale: run scripts/make_workflows.py"


@pytest.mark.parametrize("name", H.workflow_names())
def test_workflow_executes(name):
    prompt = H.fast_prompt(H.load_api(name))
    res = C.run(prompt)
    images = {nid: out(res, nid) for nid in res if not nid.startswith("_")
              and prompt[nid]["class_type"] in ("DiTFuseFuse", "DiTFuseControl", "DiTFuseDecode", "DiTFuseSegment")}
    assert images, "no DiTFuse image output executed"
    for nid, img in images.items():
        check_image(img, batch=1)
    for nid, node in prompt.items():
        if node["class_type"] == "DiTFuseSegment":
            mask = out(res, nid, 1)
            assert mask.dim() == 3 and mask.shape == out(res, nid).shape[:3]
            assert set(torch.unique(mask).tolist()) <= {0.0, 1.0}
        if node["class_type"] == "DiTFuseSampler" and "latent" in node["inputs"]:
            # the chain: Encode (64 px → 64/f latent) → LatentUpscaleBy 1.5 → 1.5× that sampled latent
            side = int(64 // VAE_F * 1.5)
            assert out(res, nid)["samples"].shape[-2:] == (side, side)
    ui = res["_ui"]
    assert any("images" in v for v in ui.values()), "no preview/save output"


def test_fuse_equals_chain():
    prompt = {
        "1": loader(),
        "2": {"class_type": "DiTFuseExamplePair", "inputs": {"pair": "mff"}},
        "3": {"class_type": "DiTFuseFuse", "inputs": {"model": ["1", 0], "image_1": ["2", 0], "image_2": ["2", 1],
                                                      "task": "mff", "instruction": "", **sampling(seed=7),
                                                      "max_side": 96}},
        "4": {"class_type": "DiTFuseCondition", "inputs": {"model": ["1", 0], "image_1": ["2", 0],
                                                           "image_2": ["2", 1], "task": "mff", "instruction": "",
                                                           "max_side": 96}},
        "5": {"class_type": "DiTFuseSampler", "inputs": {"model": ["1", 0], "conditioning": ["4", 0],
                                                         **sampling(seed=7)}},
        "6": {"class_type": "DiTFuseDecode", "inputs": {"model": ["1", 0], "latent": ["5", 0], "restore_size": True}},
        "7": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}},
        "8": {"class_type": "PreviewImage", "inputs": {"images": ["6", 0]}},
    }
    res = C.run(prompt)
    fused, chained = out(res, "3"), out(res, "6")
    check_image(fused, batch=1)
    assert fused.shape == chained.shape
    assert torch.equal(fused, chained), float((fused - chained).abs().max())


@pytest.fixture(scope="module")
def omnigen_layout_model():
    """A test model in the original OmniGen-v1 layout with an SDXL-shaped (8x) VAE, in the models folder."""
    import shutil

    from original_format import save_original_folder

    from ditfuse_core.tiny import tiny_transformer, tiny_vae

    name = "test-omnigen-layout-8x"
    folder = H.HOME / "models" / "ditfuse" / name
    save_original_folder(folder, tiny_transformer(seed=11), tiny_vae(seed=12))
    yield name
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.parametrize("which", ["bundled", "omnigen-layout-8x"])
def test_decode_after_core_upscale_latent_gives_the_size_asked_for(which, request):
    """Sampler → core Upscale Latent By 2 → Decode: twice the working size (the upscale is kept, whatever the
    VAE's factor); straight Sampler → Decode: image 1's original size."""
    model = BUNDLED if which == "bundled" else request.getfixturevalue("omnigen_layout_model")
    prompt = {
        "1": loader(model=model),
        "2": {"class_type": "DiTFuseExamplePair", "inputs": {"pair": "mef"}},
        "3": {"class_type": "DiTFuseCondition", "inputs": {"model": ["1", 0], "image_1": ["2", 0],
                                                           "image_2": ["2", 1], "task": "mef", "instruction": "",
                                                           "max_side": 64}},
        "4": {"class_type": "DiTFuseSampler", "inputs": {"model": ["1", 0], "conditioning": ["3", 0], **sampling()}},
        "5": {"class_type": "LatentUpscaleBy", "inputs": {"samples": ["4", 0], "upscale_method": "nearest-exact",
                                                          "scale_by": 2.0}},
        "6": {"class_type": "DiTFuseDecode", "inputs": {"model": ["1", 0], "latent": ["5", 0], "restore_size": True}},
        "7": {"class_type": "DiTFuseDecode", "inputs": {"model": ["1", 0], "latent": ["4", 0], "restore_size": False}},
        "8": {"class_type": "DiTFuseDecode", "inputs": {"model": ["1", 0], "latent": ["4", 0], "restore_size": True}},
        "9": {"class_type": "PreviewImage", "inputs": {"images": ["6", 0]}},
        "10": {"class_type": "PreviewImage", "inputs": {"images": ["7", 0]}},
        "11": {"class_type": "PreviewImage", "inputs": {"images": ["8", 0]}},
    }
    res = C.run(prompt)
    lat = out(res, "4")
    f = lat["ditfuse_vae_factor"]
    assert f == (VAE_F if which == "bundled" else 8)
    working = tuple(out(res, "7").shape[1:3])
    assert working == tuple(x * f for x in lat["samples"].shape[-2:]) and max(working) == 64
    assert tuple(out(res, "6").shape[1:3]) == (2 * working[0], 2 * working[1])
    original = tuple(A.example_pair("mef")[0].shape[1:3])
    assert tuple(out(res, "8").shape[1:3]) == original


def _batch_prompt(n1, n2, max_side=64):
    return {
        "1": loader(),
        "2": {"class_type": "DiTFuseExamplePair", "inputs": {"pair": "mef"}},
        "3": {"class_type": "RepeatImageBatch", "inputs": {"image": ["2", 0], "amount": n1}},
        "4": {"class_type": "RepeatImageBatch", "inputs": {"image": ["2", 1], "amount": n2}},
        "5": {"class_type": "DiTFuseFuse", "inputs": {"model": ["1", 0], "image_1": ["3", 0], "image_2": ["4", 0],
                                                      "task": "mef", "instruction": "", **sampling(seed=3),
                                                      "max_side": max_side}},
        "6": {"class_type": "PreviewImage", "inputs": {"images": ["5", 0]}},
    }


@pytest.mark.parametrize("n1,n2,n", [(2, 2, 2), (1, 3, 3), (3, 1, 3)])
def test_fuse_batches(n1, n2, n):
    res = C.run(_batch_prompt(n1, n2))
    img = out(res, "5")
    check_image(img, batch=n)
    # every item is processed, item i with seed + i: identical inputs give different samples per item
    assert not torch.equal(img[0], img[1])
    if n1 != 1:
        return
    # item i equals a single run with seed + i
    single = C.run({**_batch_prompt(1, 1), "5": {**_batch_prompt(1, 1)["5"], "inputs": {
        **_batch_prompt(1, 1)["5"]["inputs"], "seed": 3 + n - 1}}})
    assert torch.allclose(img[n - 1: n], out(single, "5"), atol=1e-5)


def test_fuse_batch_mismatch_is_a_clear_error():
    with pytest.raises(AssertionError) as e:
        C.run(_batch_prompt(2, 3))
    assert "batch sizes do not match" in str(e.value) and "image_1 has 2, image_2 has 3" in str(e.value)


def test_control_and_segment_batches():
    prompt = {
        "1": loader(),
        "2": {"class_type": "DiTFuseExamplePair", "inputs": {"pair": "ivif"}},
        "3": {"class_type": "RepeatImageBatch", "inputs": {"image": ["2", 0], "amount": 2}},
        "4": {"class_type": "DiTFuseControl", "inputs": {"model": ["1", 0], "image_1": ["3", 0],
                                                         "adjustment": "CONTRAST-", "instruction": "",
                                                         **sampling(), "max_side": 64}},
        "5": {"class_type": "DiTFuseSegment", "inputs": {"model": ["1", 0], "image_1": ["3", 0], "image_2": ["2", 1],
                                                         "class_name": "person", "instruction": "", **sampling(),
                                                         "max_side": 64}},
        "6": {"class_type": "PreviewImage", "inputs": {"images": ["4", 0]}},
        "7": {"class_type": "MaskToImage", "inputs": {"mask": ["5", 1]}},
        "8": {"class_type": "PreviewImage", "inputs": {"images": ["7", 0]}},
    }
    res = C.run(prompt)
    check_image(out(res, "4"), batch=2, size=(320, 320))
    check_image(out(res, "5"), batch=2, size=(320, 320))
    assert out(res, "5", 1).shape == (2, 320, 320)


def test_encode_gives_raw_sdxl_style_latents():
    prompt = {
        "1": loader(),
        "2": {"class_type": "DiTFuseExamplePair", "inputs": {"pair": "ivif"}},
        "3": {"class_type": "DiTFuseEncode", "inputs": {"model": ["1", 0], "image": ["2", 0], "max_side": 128,
                                                        "seed": 0}},
        "4": {"class_type": "DiTFuseDecode", "inputs": {"model": ["1", 0], "latent": ["3", 0], "restore_size": True}},
        "5": {"class_type": "PreviewImage", "inputs": {"images": ["4", 0]}},
    }
    res = C.run(prompt)
    lat = out(res, "3")
    assert set(lat) >= {"samples"} and lat["samples"].shape == (1, LATENT_CH, 128 // VAE_F, 128 // VAE_F)
    pipe = out(res, "1").pipe
    pix, _ = pipe.preprocess(A.example_pair("ivif")[0], 128)
    scaled = pipe.encode_input(pix[0], seed=0)
    assert torch.allclose(lat["samples"], scaled / pipe.vae.config.scaling_factor, atol=1e-5)
    check_image(out(res, "4"), batch=1, size=(320, 320))


def test_missing_model_fails_validation_with_one_message_on_its_input():
    """ComfyUI ≥ 0.7 checks the combo itself ("Value not in list", once, on that input); on 0.3.75 the pack does
    (its message names the folders searched)."""
    import sys

    core = next(m for n, m in sys.modules.items() if n.endswith("nodes.comfy_api_version")).CORE_CHECKS_COMBOS
    prompt = {"1": loader(model="no-such-model"), "2": {"class_type": "DiTFuseExamplePair", "inputs": {"pair": "ivif"}},
              "3": {"class_type": "DiTFuseFuse", "inputs": {"model": ["1", 0], "image_1": ["2", 0], "image_2": ["2", 1],
                                                            "task": "ivif", "instruction": "", **sampling(),
                                                            "max_side": 64}},
              "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}}}

    def refused(what: str):
        valid, err, outputs, node_errors = C.validate(prompt)
        assert not valid
        errs = node_errors["1"]["errors"]
        if core:
            assert [e["extra_info"]["input_name"] for e in errs] == [what], errs
            assert errs[0]["type"] == "value_not_in_list", errs
        else:
            assert f"was not found" in json.dumps(errs), errs

    refused("model")
    prompt["1"] = loader(lora="missing_lora.safetensors")
    refused("lora")
    for model, lora in (("/etc", "none"), ("../../ComfyUI", "none"), (BUNDLED, "/etc/passwd"),
                        (BUNDLED, "../../../../etc/hostname")):  # never outside the registered folders
        prompt["1"] = loader(model=model, lora=lora)
        refused("model" if lora == "none" else "lora")


def test_shipped_workflows_follow_the_model_the_loader_picks(monkeypatch):
    """The shipped workflows leave sampling at "model default" (steps 0, cfg/img_cfg -1): switching only the
    loader's model to a folder whose ditfuse.json says otherwise makes the sampler use that folder's values."""
    import shutil

    from ditfuse_core import sampler as sampler_mod
    from ditfuse_core.tiny import save_diffusers_folder, tiny_transformer, tiny_vae

    import comfy.utils

    name = "test-model-defaults"
    folder = H.HOME / "models" / "ditfuse" / name
    save_diffusers_folder(folder, tiny_transformer(seed=5), tiny_vae(seed=6),
                          defaults={"steps": 3, "cfg": 1.5, "img_cfg": 1.25, "max_side": 64})
    used, totals = [], []
    real_sample = sampler_mod.sample

    def spy(*a, **kw):
        used.append((kw["steps"], kw["cfg"], kw["img_cfg"]))
        return real_sample(*a, **kw)

    monkeypatch.setattr(sampler_mod, "sample", spy)
    old = comfy.utils.PROGRESS_BAR_HOOK
    comfy.utils.set_progress_bar_global_hook(lambda value, total, preview, node_id=None: totals.append(total))
    try:
        for wf in ("ivif", "control", "segmentation"):
            for model, expect in ((BUNDLED, None), (name, (3, 1.5, 1.25))):
                prompt = H.load_api(wf)
                loaders = [n for n in prompt.values() if n["class_type"] == "DiTFuseModelLoader"]
                assert len(loaders) == 1
                loaders[0]["inputs"]["model"] = model
                used.clear()
                totals.clear()
                C.run(prompt)
                bundled = A.bundled_model_path()
                want = expect or tuple(json.loads((bundled / "ditfuse.json").read_text())["defaults"][k]
                                       for k in ("steps", "cfg", "img_cfg"))
                assert used == [want], (wf, model, used)
                assert totals and set(totals) == {want[0]}, (wf, model, totals)
    finally:
        comfy.utils.set_progress_bar_global_hook(old)
        shutil.rmtree(folder, ignore_errors=True)


def test_model_folder_is_added_not_overwritten():
    roots = C.folder_paths.get_folder_paths("ditfuse")
    assert str(H.HOME / "models" / "ditfuse") in [str(p) for p in roots], roots   # from extra_model_paths.yaml
    assert any(p.endswith("models/ditfuse") and str(H.COMFY_DIR) in p for p in roots), roots


def test_model_is_managed_by_comfy_memory_manager():
    import comfy.model_management as mm

    C.run({"1": loader(), "2": {"class_type": "DiTFuseExamplePair", "inputs": {"pair": "ivif"}},
           "3": {"class_type": "DiTFuseControl", "inputs": {"model": ["1", 0], "image_1": ["2", 0],
                                                            "adjustment": "LIGHT+", "instruction": "", **sampling(),
                                                            "max_side": 64}},
           "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}}})
    names = [type(m.model.model).__name__ for m in mm.current_loaded_models if m.model is not None]
    assert "DiTFuseModule" in names, names


def test_sampling_declares_its_memory_to_comfy(monkeypatch):
    """Each sampling node tells load_models_gpu what the call needs besides the weights: more for a larger
    working size and for more guidance branches (the bundled model's default cfg = img_cfg = 1 runs one)."""
    import comfy.model_management as mm

    asked = []
    real = mm.load_models_gpu

    def spy(models, memory_required=0, **kw):
        asked.append(memory_required)
        return real(models, memory_required=memory_required, **kw)

    monkeypatch.setattr(mm, "load_models_gpu", spy)

    def need(max_side, cfg, img_cfg, seed):
        asked.clear()
        C.run({"1": loader(), "2": {"class_type": "DiTFuseExamplePair", "inputs": {"pair": "mff"}},
               "3": {"class_type": "DiTFuseFuse", "inputs": {"model": ["1", 0], "image_1": ["2", 0],
                                                             "image_2": ["2", 1], "task": "mff", "instruction": "",
                                                             "seed": seed, "steps": 1, "cfg": cfg,
                                                             "img_cfg": img_cfg, "max_side": max_side}},
               "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}}})
        return max(asked)

    small, large = need(64, 2.0, 1.6, 1), need(128, 2.0, 1.6, 2)
    one_branch = need(128, 1.0, 1.0, 3)
    assert 0 < small < large and 0 < one_branch < large, (small, large, one_branch)


def test_progress_and_interrupt_within_one_step():
    import comfy.model_management as mm
    import comfy.utils

    calls = []
    old = comfy.utils.PROGRESS_BAR_HOOK

    def hook(value, total, preview, node_id=None):
        calls.append((value, total))
        if len(calls) == 1:  # at the first report (always sent; newer ComfyUI throttles the others)
            mm.interrupt_current_processing(True)

    comfy.utils.set_progress_bar_global_hook(hook)
    try:
        prompt = {"1": loader(), "2": {"class_type": "DiTFuseExamplePair", "inputs": {"pair": "ivif"}},
                  "3": {"class_type": "DiTFuseFuse", "inputs": {"model": ["1", 0], "image_1": ["2", 0],
                                                                "image_2": ["2", 1], "task": "ivif", "instruction": "",
                                                                **sampling(steps=50), "max_side": 64}},
                  "4": {"class_type": "PreviewImage", "inputs": {"images": ["3", 0]}}}
        with pytest.raises(AssertionError):
            C.run(prompt)
        events = [e for e, _ in C.executor.status_messages]
        assert "execution_interrupted" in events, events
        assert max(v for v, _ in calls) <= calls[0][0] + 1, calls  # stopped within one step of the request
        assert all(t == 50 for _, t in calls)
    finally:
        comfy.utils.set_progress_bar_global_hook(old)
        mm.interrupt_current_processing(False)
    # the next prompt runs normally
    res = C.run(H.fast_prompt(H.load_api("ivif")))
    assert any(k for k in res if not k.startswith("_"))


def test_metrics_node():
    try:
        from ditfuse_core.metrics import metrics_report  # noqa: F401
    except ImportError:
        pytest.skip("ditfuse_core.metrics.metrics_report not available yet")
    prompt = {"1": loader(), "2": {"class_type": "DiTFuseExamplePair", "inputs": {"pair": "ivif"}},
              "3": {"class_type": "DiTFuseFuse", "inputs": {"model": ["1", 0], "image_1": ["2", 0], "image_2": ["2", 1],
                                                            "task": "ivif", "instruction": "", **sampling(),
                                                            "max_side": 64}},
              "4": {"class_type": "DiTFuseMetrics", "inputs": {"image_1": ["2", 0], "image_2": ["2", 1],
                                                               "fused": ["3", 0]}}}
    res = C.run(prompt)
    table, js = out(res, "4"), out(res, "4", 1)
    assert isinstance(table, str) and "|" in table
    assert isinstance(json.loads(js), (dict, list))
    assert res["_ui"]["4"]["text"]


def test_pack_uses_the_newest_versioned_node_api():
    """comfy_api.v0_0_3 where ComfyUI has it (after 0.33), v0_0_2 on 0.3.75 … 0.33; `latest` on trees with neither."""
    import importlib.util
    import sys

    mod = next(m for name, m in sys.modules.items() if name.endswith("nodes.comfy_api_version"))
    have = [v for v in ("comfy_api.v0_0_3", "comfy_api.v0_0_2") if importlib.util.find_spec(v)]
    assert mod.API == (have[0] if have else "comfy_api.latest"), (mod.API, have)
    assert mod.CORE_CHECKS_COMBOS == (mod.comfyui_version() >= (0, 7))

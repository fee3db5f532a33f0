"""Node pack checks that need no ComfyUI: the entry module imports cleanly, model/LoRA discovery, batch
rules, example pairs."""
from __future__ import annotations

import asyncio
import importlib.util
import inspect
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from comfy_harness import ROOT, pack_adapters

A = pack_adapters()


def test_entry_module_imports_without_comfyui():
    code = (
        "import importlib.util, inspect, sys\n"
        f"spec = importlib.util.spec_from_file_location('ditfuse_pack', {str(ROOT / '__init__.py')!r},"
        f" submodule_search_locations=[{str(ROOT)!r}])\n"
        "m = importlib.util.module_from_spec(spec); sys.modules['ditfuse_pack'] = m; spec.loader.exec_module(m)\n"
        "assert inspect.iscoroutinefunction(m.comfy_entrypoint)\n"
        "assert not any(k == 'comfy' or k.startswith(('comfy.', 'comfy_api')) for k in sys.modules), 'imported ComfyUI'\n"
        "assert 'torch' not in sys.modules, 'entry module should be light'\n"
        "print('ok')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT / "tests")
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr


def test_entrypoint_fails_clearly_without_comfyui():
    spec = importlib.util.spec_from_file_location("ditfuse_pack_t", ROOT / "__init__.py",
                                                  submodule_search_locations=[str(ROOT)])
    m = importlib.util.module_from_spec(spec)
    sys.modules["ditfuse_pack_t"] = m
    spec.loader.exec_module(m)
    if importlib.util.find_spec("comfy_api") is not None:
        pytest.skip("ComfyUI importable in this process")
    with pytest.raises(ImportError):
        asyncio.run(m.comfy_entrypoint())


def _model(root: Path, name: str, kind: str) -> Path:
    p = root / name
    p.mkdir(parents=True)
    if kind == "diffusers":
        (p / "model_index.json").write_text("{}")
    else:
        (p / "config.json").write_text("{}")
        (p / "model.safetensors").write_bytes(b"")
    return p


def test_model_and_lora_discovery(tmp_path):
    r1, r2 = tmp_path / "a", tmp_path / "b"
    _model(r1, "OmniGen-v1", "original")
    _model(r2, "omnigen-diffusers", "diffusers")
    _model(r2, "Shitao/OmniGen-v1-copy", "original")
    (r1 / "not-a-model").mkdir()
    (r1 / "loras" / "ditfuse_lora").mkdir(parents=True)
    (r1 / "loras" / "ditfuse_lora" / "adapter_config.json").write_text("{}")
    (r2 / "loras").mkdir()
    (r2 / "loras" / "extra.safetensors").write_bytes(b"")
    (r2 / "loras" / "readme.txt").write_text("x")

    models = A.list_models([r1, r2, tmp_path / "missing"])
    assert models[0] == A.bundled_choice()
    assert models[1:] == ["OmniGen-v1", "Shitao/OmniGen-v1-copy", "omnigen-diffusers"]
    # the downloadable ones are offered too, after what is there (OmniGen-v1 is there already: listed once)
    assert A.list_loras([r1, r2]) == ["none", "ditfuse_lora", "extra.safetensors", "DiTFuse"]

    assert A.resolve_model(A.bundled_choice(), [r1]) is None
    assert A.resolve_model("omnigen-diffusers", [r1, r2]) == r2 / "omnigen-diffusers"
    assert A.resolve_lora("none", [r1]) is None
    assert A.resolve_lora("extra.safetensors", [r1, r2]) == r2 / "loras" / "extra.safetensors"
    with pytest.raises(FileNotFoundError, match="DiTFuse model 'nope' was not found"):
        A.resolve_model("nope", [r1])
    with pytest.raises(FileNotFoundError, match="DiTFuse LoRA 'nope.safetensors' was not found"):
        A.resolve_lora("nope.safetensors", [r1])


def test_model_and_lora_names_never_leave_the_registered_folders(tmp_path):
    """A node's model / lora value resolves only inside models/ditfuse (and its loras/): absolute paths, `..`
    and symlinks out are refused like a missing name; pickled LoRA files are not listed."""
    root, outside = tmp_path / "models" / "ditfuse", tmp_path / "elsewhere"
    _model(outside, "secret-model", "original")
    (outside / "secret.safetensors").write_bytes(b"")
    (root / "loras").mkdir(parents=True)
    (root / "loras" / "ok.safetensors").write_bytes(b"")
    (root / "loras" / "pickled.bin").write_bytes(b"")
    (root / "linked-out").symlink_to(outside / "secret-model", target_is_directory=True)
    (root / "loras" / "linked.safetensors").symlink_to(outside / "secret.safetensors")
    assert A.is_model_folder(outside / "secret-model")
    for name in (str(outside / "secret-model"), "../elsewhere/secret-model", "../../elsewhere/secret-model",
                 "linked-out", "./linked-out", "a/../../elsewhere/secret-model", ""):
        with pytest.raises(FileNotFoundError, match="was not found"):
            A.resolve_model(name, [root])
    for name in (str(outside / "secret.safetensors"), "../../elsewhere/secret.safetensors", "linked.safetensors",
                 "pickled.bin"):
        with pytest.raises(FileNotFoundError, match="was not found"):
            A.resolve_lora(name, [root])
    assert A.resolve_lora("ok.safetensors", [root]) == (root / "loras" / "ok.safetensors").resolve()
    assert A.list_loras([root]) == ["none", "ok.safetensors", "DiTFuse"]
    assert "linked-out" not in A.list_models([root])


def test_downloadable_models_are_listed_before_they_exist_and_checked(tmp_path, monkeypatch):
    """OmniGen-v1 and the DiTFuse LoRA are offered on a fresh models folder; with download_if_missing off the
    check (and the run) names the `ditfuse download` command and the first folder; on, the run downloads into
    the first folder (the download itself: tests/test_download.py, and the ComfyUI run in
    tests/test_comfy_download.py)."""
    from ditfuse_core import download as dl

    r1, r2 = tmp_path / "first" / "ditfuse", tmp_path / "second" / "ditfuse"
    assert A.list_models([r1, r2]) == [A.bundled_choice(), "OmniGen-v1"]
    assert A.list_loras([r1, r2]) == ["none", "DiTFuse"]
    for kind, name, known in (("model", "OmniGen-v1", "omnigen-v1"), ("lora", "DiTFuse", "ditfuse-lora")):
        msg = A.check_choice(kind, name, [r1, r2], allow=False)
        assert msg == (f"DiTFuse {kind} '{name}': {dl.spec(known).repo} is not downloaded: run `ditfuse download "
                       f"{known} --dir {r1}` (it goes to {r1 / dl.spec(known).folder}), or turn on "
                       f"download_if_missing in DiTFuse Model Loader"), msg
        assert A.check_choice(kind, name, [r1, r2], allow=True) is True
        with pytest.raises(dl.DownloadError, match=f"run `ditfuse download {known} --dir {r1}`"):
            A.fetch_missing(kind, name, [r1, r2], allow=False)
        calls = []
        monkeypatch.setattr(dl, "download", lambda n, d, **kw: calls.append((n, d)))
        A.fetch_missing(kind, name, [r1, r2], allow=True)
        assert calls == [(known, r1)]
        monkeypatch.undo()
    # a name that is not downloadable is checked as before; one that is there (second folder) is not fetched
    assert "was not found" in A.check_choice("model", "nope", [r1], allow=True)
    _model(r2, "OmniGen-v1", "original")
    assert A.check_choice("model", "OmniGen-v1", [r1, r2], allow=False) is True
    A.fetch_missing("model", "OmniGen-v1", [r1, r2], allow=False)


def test_bundled_model_choice_points_at_a_model():
    assert A.bundled_model_path().is_dir()
    assert A.bundled_choice().startswith(A.bundled_model_path().name)


def test_batch_rules():
    """One rule, the core's, for the library and every node."""
    from ditfuse_core.pipeline import batch_size

    one, two, three = (torch.zeros(n, 8, 8, 3) for n in (1, 2, 3))
    assert batch_size({"image_1": two, "image_2": two}) == 2
    assert batch_size({"image_1": one, "image_2": three}) == 3
    assert batch_size({"image_1": three, "image_2": one, "image_3": None}) == 3
    with pytest.raises(ValueError, match="image_1 has 2, image_2 has 3"):
        batch_size({"image_1": two, "image_2": three})
    assert A.pick(one, 2).shape[0] == 1 and torch.equal(A.pick(three, 2), three[2:3])


def test_example_pairs():
    manifest = A.example_manifest()
    assert set(manifest) == {"ivif", "mff", "mef"}
    for task in manifest:
        a, b = A.example_pair(task)
        assert a.shape == b.shape and a.shape[0] == 1 and a.shape[-1] == 3
        assert max(a.shape[1:3]) <= 512
        assert a.dtype == torch.float32 and 0 <= float(a.min()) and float(a.max()) <= 1
        assert float((a - b).abs().mean()) > 0.02, f"{task}: the two images should differ"


def test_example_images_match_their_script():
    r = subprocess.run([sys.executable, str(ROOT / "scripts" / "make_example_images.py"), "--check"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr + r.stdout


def test_latent_conversion_roundtrip():
    class Cfg:
        scaling_factor, shift_factor = 0.13025, None

    class Vae:
        config = Cfg()

    class Pipe:
        vae = Vae()

    x = torch.randn(2, 4, 8, 8)
    raw = A.to_comfy_latent(Pipe(), x)
    assert torch.allclose(raw, x / 0.13025)
    assert torch.allclose(A.from_comfy_latent(Pipe(), raw), x, atol=1e-6)


def test_sampling_signature_matches_core_contract():
    from ditfuse_core.pipeline import DiTFusePipeline

    for name in ("fuse", "control", "segment", "preprocess", "encode", "encode_input", "conditioning", "branches",
                 "sample", "sample_conditioning", "decode"):
        assert callable(getattr(DiTFusePipeline, name)), name
    params = inspect.signature(DiTFusePipeline.sample).parameters
    for p in ("seed", "steps", "cfg", "img_cfg", "latent_size", "progress"):
        assert p in params


def test_low_vram_states_map_to_layer_offload():
    """ComfyUI's --lowvram / --novram (VRAMState LOW_VRAM / NO_VRAM) → the engine's offload "layers" with the
    KV cache on the CPU; every other state loads the model whole (nodes/README.md "Memory")."""
    for state in ("LOW_VRAM", "NO_VRAM"):
        assert A.engine_for_vram_state(state) == {"offload": "layers", "kv_cache": "cpu"}
    for state in ("DISABLED", "NORMAL_VRAM", "HIGH_VRAM", "SHARED", None):
        assert A.engine_for_vram_state(state) == {}

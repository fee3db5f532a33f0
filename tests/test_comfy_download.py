"""DiTFuse Model Loader's download_if_missing (issue #27) in a real ComfyUI server against the local Hub of
tests/test_download.py (HF_ENDPOINT on 127.0.0.1, never the internet): a fresh models/ditfuse folder (from an
extra_model_paths.yaml with is_default, so the first registered folder) lists OmniGen-v1 and the DiTFuse LoRA;
with the option on the workflow downloads both and fuses; off, the prompt is refused with the `ditfuse download`
command and the folder."""
from __future__ import annotations

import json

import pytest

import comfy_harness as H
from test_download import Hub, published  # noqa: F401  (published: the Hub's files, a fixture)


@pytest.fixture(scope="module")
def hub(published):  # noqa: F811
    h = Hub(published)
    yield h
    h.stop()


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return tmp_path_factory.mktemp("comfy_download") / "models" / "ditfuse"


@pytest.fixture(scope="module")
def server(hub, models, tmp_path_factory):
    H.require(H.comfy_missing_reason())
    tmp = models.parent.parent
    yaml = tmp / "extra_model_paths.yaml"
    yaml.write_text(f"pack:\n    base_path: {H.HOME}\n    custom_nodes: custom_nodes\n"
                    f"fresh:\n    base_path: {tmp}\n    is_default: true\n    ditfuse: models/ditfuse\n")
    env = {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": hub.url, "HF_HOME": str(tmp / "hf_home"),
           "HF_HUB_DISABLE_TELEMETRY": "1", "NO_PROXY": "127.0.0.1,localhost", "HF_TOKEN": ""}
    s = H.ComfyServer(log_path=H.artifacts_dir() / "comfyui-download-server.log", env=env, extra_yaml=yaml).start()
    yield s
    s.stop()


def _prompt(download: bool) -> tuple[dict, str]:
    prompt = H.fast_prompt(H.load_api("ivif"))
    loader = next(k for k, v in prompt.items() if v["class_type"] == "DiTFuseModelLoader")
    prompt[loader]["inputs"].update(model="OmniGen-v1", lora="DiTFuse", download_if_missing=download)
    return prompt, loader


def test_lists_offer_the_downloadable_models_on_a_fresh_folder(server, models):
    assert not models.exists()
    info = server.get("/object_info/DiTFuseModelLoader")["DiTFuseModelLoader"]["input"]
    req = info["required"]
    options = lambda spec: spec[1]["options"] if isinstance(spec[0], str) else spec[0]  # noqa: E731  (V3 / V1 combos)
    assert "OmniGen-v1" in options(req["model"]) and "DiTFuse" in options(req["lora"])
    assert info["optional"]["download_if_missing"][1]["default"] is False


def test_option_off_is_refused_with_the_download_command(server, models, hub):
    prompt, loader = _prompt(download=False)
    status, body = server.post_prompt(prompt)
    want = f"ditfuse download omnigen-v1 --dir {models}"
    if status == 400:  # ComfyUI < 0.7: at submit, by the pack's validate_inputs
        errs = json.dumps(body["node_errors"][loader])
        assert want in errs and "download_if_missing" in errs, errs
    else:  # ComfyUI >= 0.7 checks the lists itself (the name is listed): the Loader fails at run time
        assert status == 200, body
        hist = server.wait_history(body["prompt_id"], timeout=120)
        assert hist["status"]["status_str"] == "error"
        assert want in json.dumps(hist["status"]["messages"])
    assert not models.exists()
    assert not [p for m, p, _ in hub.log if m == "GET" and "/resolve/" in p]


def test_option_on_downloads_into_the_first_folder_and_fuses(server, models, published):  # noqa: F811
    prompt, _ = _prompt(download=True)
    status, body = server.post_prompt(prompt)
    assert status == 200, body
    hist = server.wait_history(body["prompt_id"], timeout=300)
    assert hist["status"]["status_str"] == "success", (hist["status"], server.log_tail())
    assert [img for out in hist["outputs"].values() for img in out.get("images", [])]
    model, lora = models / "OmniGen-v1", models / "loras" / "DiTFuse"
    assert (model / "model.safetensors").read_bytes() == published["Shitao/OmniGen-v1"]["model.safetensors"]
    assert (lora / "adapter_model.safetensors").read_bytes() == \
        published["lijiayangCS/DiTFuse"]["adapter_model.safetensors"]
    assert not [p for p in models.iterdir() if p.name.endswith(".partial")]
    # now there: the same prompt with the option off runs (no download needed)
    prompt, loader = _prompt(download=False)
    prompt[loader]["inputs"]["lora_strength"] = 0.5  # not a cached result
    status, body = server.post_prompt(prompt)
    assert status == 200, body
    assert server.wait_history(body["prompt_id"], timeout=300)["status"]["status_str"] == "success"

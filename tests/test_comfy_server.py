"""A real ComfyUI server on 127.0.0.1 with the pack (and, in test_browser_workflows.py, the real frontend in
headless Chromium). One server per test session, shared through comfy_harness.shared_server()."""
from __future__ import annotations

import time
import urllib.parse
import uuid

import pytest

import comfy_harness as H

OUR_NODES = {
    "DiTFuseModelLoader": (["model", "lora", "lora_strength", "dtype", "offload", "weights", "download_if_missing"],
                           ["DITFUSE_MODEL"]),
    "DiTFuseFuse": (["model", "image_1", "image_2", "task", "instruction", "seed", "steps", "cfg", "img_cfg",
                     "max_side"], ["IMAGE"]),
    "DiTFuseControl": (["model", "image_1", "adjustment", "instruction", "seed", "steps", "cfg", "img_cfg",
                        "max_side", "image_2"], ["IMAGE"]),
    "DiTFuseSegment": (["model", "image_1", "class_name", "instruction", "seed", "steps", "cfg", "img_cfg",
                        "max_side", "image_2"], ["IMAGE", "MASK"]),
    "DiTFuseEncode": (["model", "image", "max_side", "seed"], ["LATENT"]),
    "DiTFuseCondition": (["model", "image_1", "task", "instruction", "max_side", "image_2"], ["DITFUSE_CONDITIONING"]),
    "DiTFuseSampler": (["model", "conditioning", "seed", "steps", "cfg", "img_cfg", "latent"], ["LATENT"]),
    "DiTFuseDecode": (["model", "latent", "restore_size"], ["IMAGE"]),
    "DiTFuseExamplePair": (["pair"], ["IMAGE", "IMAGE"]),
    "DiTFuseMetrics": (["image_1", "image_2", "fused"], ["STRING", "STRING"]),
}


@pytest.fixture(scope="module")
def server():
    H.require(H.comfy_missing_reason())
    return H.shared_server()


def test_object_info_lists_every_node(server):
    info = server.get("/object_info")
    for name, (inputs, outputs) in OUR_NODES.items():
        assert name in info, name
        node = info[name]
        got = list(node["input"].get("required", {})) + list(node["input"].get("optional", {}))
        assert got == inputs, (name, got)
        assert node["output"] == outputs, (name, node["output"])
        assert all(node["output_name"]) and node["output_name"] != node["output"], \
            (name, node["output_name"])  # outputs are named, not just typed
        tips = {k: (v[1] if len(v) > 1 else {}).get("tooltip") for s in ("required", "optional")
                for k, v in node["input"].get(s, {}).items()}
        assert all(tips.values()), (name, [k for k, t in tips.items() if not t])
        assert node["category"] == "DiTFuse"
        assert node["display_name"].startswith("DiTFuse")
    loader = info["DiTFuseModelLoader"]["input"]["required"]
    assert loader["model"][1]["options"][0] == H.pack_adapters().bundled_choice()
    assert info["DiTFuseMetrics"]["output_node"] is True


def test_control_and_segment_take_a_pair_with_an_optional_second_image(server):
    """The authors' [CONTROL] / [SEG] are two-image tasks: the nodes take image_1 and an optional image_2, and
    the shipped workflows connect both."""
    import json

    info = server.get("/object_info")
    for node, wf in (("DiTFuseControl", "control"), ("DiTFuseSegment", "segmentation")):
        assert "image_1" in info[node]["input"]["required"]
        assert list(info[node]["input"]["optional"]) == ["image_2"]
        ui = H.load_ui(wf)
        (n,) = [n for n in ui["nodes"] if n["type"] == node]
        linked = {i["name"] for i in n["inputs"] if i.get("link") is not None}
        assert {"image_1", "image_2"} <= linked, linked


@pytest.mark.parametrize("name", H.workflow_names())
def test_workflow_via_prompt_endpoint(server, name):
    status, body = server.post_prompt(H.load_api(name))
    assert status == 200, body
    assert body.get("node_errors") == {}, body
    hist = server.wait_history(body["prompt_id"], timeout=300)
    assert hist["status"]["status_str"] == "success", hist["status"]
    images = [img for out in hist["outputs"].values() for img in out.get("images", [])]
    assert images, hist["outputs"]


def test_missing_model_is_http_400_with_our_message(server):
    prompt = H.load_api("ivif")
    loader_id = next(k for k, v in prompt.items() if v["class_type"] == "DiTFuseModelLoader")
    prompt[loader_id]["inputs"]["model"] = "OmniGen-v1-not-downloaded"
    status, body = server.post_prompt(prompt)
    assert status == 400, body
    errs = body["node_errors"][loader_id]["errors"]
    assert any("DiTFuse model 'OmniGen-v1-not-downloaded' was not found" in e["details"]  # ComfyUI < 0.7: ours
               or e["type"] == "value_not_in_list" and e["extra_info"]["input_name"] == "model"  # ≥ 0.7: core's
               for e in errs), errs


def test_interrupt_during_sampling_then_next_prompt_succeeds(server):
    slow = H.load_api("mef")
    fuse_id = next(k for k, v in slow.items() if v["class_type"] == "DiTFuseFuse")
    slow[fuse_id]["inputs"].update(steps=1000, seed=12345)
    status, body = server.post_prompt(slow)
    assert status == 200, body
    pid = body["prompt_id"]
    # wait until the Fuse node is running (queue says running, then give it a moment inside sampling)
    deadline = time.time() + 120
    while time.time() < deadline:
        q = server.get("/queue")
        if any(item[1] == pid for item in q["queue_running"]):
            break
        time.sleep(0.2)
    time.sleep(3.0)
    t0 = time.time()
    status, _ = server.request("POST", "/interrupt", {})
    assert status == 200
    hist = server.wait_history(pid, timeout=120)
    stopped_after = time.time() - t0
    events = [m[0] for m in hist["status"]["messages"]]
    assert "execution_interrupted" in events, hist["status"]
    assert hist["status"]["status_str"] == "error"
    assert stopped_after < 30, stopped_after
    status, body = server.post_prompt(H.load_api("control"))
    assert status == 200
    assert server.wait_history(body["prompt_id"])["status"]["status_str"] == "success"


def test_workflow_templates_list_the_pack(server):
    templates = server.get("/api/workflow_templates")
    assert sorted(templates.get(H.PACK_NAME, [])) == H.workflow_names(), templates
    wf = server.get(f"/api/workflow_templates/{H.PACK_NAME}/{urllib.parse.quote(H.WF['ivif'])}.json")
    assert wf["nodes"] and wf["version"] == 0.4


def test_unique_prompt_ids_are_accepted(server):
    status, body = server.request("POST", "/prompt", {"prompt": H.load_api("mff"),
                                                      "prompt_id": str(uuid.uuid4())})
    assert status == 200, body
    assert server.wait_history(body["prompt_id"])["status"]["status_str"] == "success"

"""ComfyUI's --lowvram / --novram (issue #27): the pack maps VRAMState LOW_VRAM / NO_VRAM onto the engine's
layer offload with the KV cache on the CPU (the mapping itself: test_comfy_pack_offline.py). main.py refuses
--lowvram beside --cpu, so a --lowvram server runs only where torch sees a GPU; on a CPU the low-VRAM path is run
in a ComfyUI process whose vram_state is set to LOW_VRAM (where nothing moves, so it checks the wiring: the
engine options reach the sampler and the workflow fuses)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

import comfy_harness as H

CHILD = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
import comfy_harness as H
C = H.InProcessComfy.get()
import comfy.model_management as mm
from ditfuse_core import sampler
seen = []
real = sampler.sample
sampler.sample = lambda *a, **k: seen.append([k["offload"], k["kv_cache"]]) or real(*a, **k)
out = {}
for state in ("LOW_VRAM", "NO_VRAM", "NORMAL_VRAM"):
    mm.vram_state = mm.VRAMState[state]
    seen.clear()
    res = C.run(H.fast_prompt(H.load_api("ivif")), fresh=True)
    out[state] = seen[:]
print(json.dumps(out))
"""


def test_low_vram_state_runs_the_layer_offload_path():
    H.require(H.comfy_missing_reason())
    r = subprocess.run([sys.executable, "-c", CHILD, str(H.ROOT / "tests")], capture_output=True, text=True,
                       timeout=600, cwd=H.ROOT)
    assert r.returncode == 0, r.stderr[-4000:]
    seen = json.loads(r.stdout.strip().splitlines()[-1])
    assert seen == {"LOW_VRAM": [["layers", "cpu"]], "NO_VRAM": [["layers", "cpu"]],
                    "NORMAL_VRAM": [["none", None]]}, seen


@pytest.mark.skipif(not torch.cuda.is_available(), reason="main.py refuses --lowvram with --cpu: needs a GPU")
def test_lowvram_server_fuses():
    H.require(H.comfy_missing_reason())
    s = H.ComfyServer(log_path=H.artifacts_dir() / "comfyui-lowvram-server.log", args=("--lowvram",)).start()
    try:
        status, body = s.post_prompt(H.fast_prompt(H.load_api("ivif")))
        assert status == 200, body
        hist = s.wait_history(body["prompt_id"], timeout=300)
        assert hist["status"]["status_str"] == "success", (hist["status"], s.log_tail())
        assert "Set vram state to: LOW_VRAM" in s.log_tail(200000)
    finally:
        s.stop()


def test_pipeline_engine_defaults_reach_the_sampler(monkeypatch):
    from ditfuse_core import sampler
    from ditfuse_core.pipeline import DiTFusePipeline

    pipe = DiTFusePipeline.from_pretrained(dtype="fp32")
    seen = []
    real = sampler.sample
    monkeypatch.setattr(sampler, "sample",
                        lambda *a, **k: seen.append((k["offload"], k["kv_cache"])) or real(*a, **k))
    img = torch.rand(1, 32, 32, 3)
    pipe.fuse(img, img, steps=1, max_side=64, seed=0)
    pipe.engine = {"offload": "layers", "kv_cache": "cpu"}
    pipe.fuse(img, img, steps=1, max_side=64, seed=0)
    pipe.fuse(img, img, steps=1, max_side=64, seed=0, offload="kv_cpu")  # a call's own options win
    assert seen == [("none", None), ("layers", "cpu"), ("kv_cpu", None)], seen

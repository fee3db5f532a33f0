"""Bad input everywhere a user can give it — CLI, library, nodes through a real ComfyUI server — is refused up
front with one clear message (exit code 2 / HTTP 400 / ValueError), before any model is loaded, and leaves every
file as it was."""
from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ditfuse_core import cli, validation
from ditfuse_core.pipeline import BUNDLED_MODEL, DiTFusePipeline


def _png(path: Path, w=48, h=32, seed=0) -> Path:
    arr = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(arr).save(path)
    return path


def _state(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.is_dir() or hashlib.sha256(p.read_bytes()).hexdigest())
            for p in sorted(folder.rglob("*"))}


@pytest.fixture
def work(tmp_path):
    _png(tmp_path / "vis.png", seed=1)
    _png(tmp_path / "ir.png", seed=2)
    _png(tmp_path / "old.png", seed=3)
    (tmp_path / "text.png").write_text("not an image")
    (tmp_path / "empty.png").write_bytes(b"")
    full = (tmp_path / "vis.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(full[: len(full) // 2])
    (tmp_path / "adir.png").mkdir()
    (tmp_path / "afile").write_text("x")
    pairs = tmp_path / "pairs"
    for d in ("image1", "image2"):
        (pairs / d).mkdir(parents=True)
        _png(pairs / d / "a.png", seed=4)
    _png(pairs / "image1" / "lonely.png", seed=5)
    for d in ("image1", "image2"):
        (tmp_path / "good" / d).mkdir(parents=True)
        _png(tmp_path / "good" / d / "a.png", seed=6)
    (tmp_path / "nopairs" / "image1").mkdir(parents=True)
    (tmp_path / "nopairs" / "image2").mkdir()
    return tmp_path


V, I = "{w}/vis.png", "{w}/ir.png"
CLI_CASES = [  # (argv, message, exit code)
    (["fuse", V, I, "-o", V], "is one of the input images", 2),
    (["fuse", V, I, "-o", I], "is one of the input images", 2),
    (["fuse", V, I, "-o", "{w}/./vis.png", "--overwrite"], "is one of the input images", 2),
    (["fuse", V, I, "-o", "{w}/old.png"], "already exists (--overwrite replaces it)", 2),
    (["fuse", V, I, "-o", "{w}/adir.png"], "is a folder", 2),
    (["fuse", V, I, "-o", "{w}/out.xyz"], "unknown image extension '.xyz'", 2),
    (["fuse", V, I, "-o", "{w}/out"], "unknown image extension ''", 2),
    (["fuse", V, I, "-o", "{w}/afile/out.png"], "is a file, not a folder", 2),
    (["fuse", "{w}/nope.png", I, "-o", "{w}/o.png"], "cannot read image '{w}/nope.png'", 2),
    (["fuse", V, "{w}/nope.png", "-o", "{w}/o.png"], "cannot read image '{w}/nope.png'", 2),
    (["fuse", "{w}/text.png", I, "-o", "{w}/o.png"], "cannot read image '{w}/text.png'", 2),
    (["fuse", V, "{w}/empty.png", "-o", "{w}/o.png"], "cannot read image '{w}/empty.png'", 2),
    (["fuse", "{w}/cut.png", I, "-o", "{w}/o.png"], "cannot read image '{w}/cut.png'", 2),
    (["fuse", "{w}/adir.png", I, "-o", "{w}/o.png"], "cannot read image '{w}/adir.png'", 2),
    (["fuse", V, I, "-o", "{w}/o.png", "--cfg", "nan"], "cfg must be a finite number, got nan", 2),
    (["fuse", V, I, "-o", "{w}/o.png", "--img-cfg", "inf"], "img_cfg must be a finite number, got inf", 2),
    (["fuse", V, I, "-o", "{w}/o.png", "--lora-strength", "nan"], "lora_strength must be a finite number", 2),
    (["fuse", V, I, "-o", "{w}/o.png", "--steps", "1001"], "steps must be 1 … 1000", 2),
    (["fuse", V, I, "-o", "{w}/o.png", "--steps", "-1"], "steps must be 1 … 1000", 2),
    (["fuse", V, I, "-o", "{w}/o.png", "--max-side", "8"], "max_side must be 0", 2),
    (["fuse", V, I, "-o", "{w}/o.png", "--max-side", "-5"], "max_side must be 0", 2),
    (["fuse", V, I, "-o", "{w}/o.png", "--min-scale", "-1"], "min_scale must be 0", 2),
    (["fuse", V, I, "-o", "{w}/o.png", "--seed", "-1"], "seed must be 0", 2),
    (["fuse", V, I, "-o", "{w}/o.png", "--model", "{w}/no-model"], "--model '{w}/no-model': no such model", 2),
    (["fuse", V, I, "-o", "{w}/o.png", "--lora", "{w}/no.safetensors"], "no such file or folder", 2),
    (["fuse", V, I, "-o", "{w}/o.png", "--task", "xray"], "invalid choice: 'xray'", 2),
    (["fuse", V, I, "-o", "{w}/o.png", "--steps", "2.5"], "invalid int value: '2.5'", 2),
    (["fuse", V, I, "-o", "{w}/o.png", "--dtype", "int8"], "invalid choice: 'int8'", 2),
    (["control", V, "-o", "{w}/o.png", "--adjustment", "LIGHT+++"], "invalid choice: 'LIGHT+++'", 2),
    (["segment", V, I, "--class", "person", "-o", "{w}/s.png", "--mask", "{w}/s.png"], "are the same file", 2),
    (["segment", V, I, "--class", "person", "-o", "{w}/s.png", "--mask", "{w}/m.txt"],
     "unknown image extension '.txt'", 2),
    (["segment", V, I, "--class", "  ", "-o", "{w}/s.png"], "--class needs a class name", 2),
    (["segment", V, "--class", "person", "-o", V], "is one of the input images", 2),
    (["batch", "{w}", "-o", "{w}/out"], "needs sub-folders image1/ and image2/", 2),
    (["batch", "{w}/pairs", "-o", "{w}/out"], "no image2/ partner for: lonely.png", 2),
    (["batch", "{w}/nopairs", "-o", "{w}/out"], "no images in", 2),
    (["batch", "{w}/good", "-o", "{w}/good/image2/"], "is an input folder", 2),
    (["batch", "{w}/good", "-o", "{w}/afile"], "is a file; batch writes into a folder", 2),
    (["batch", "{w}/good", "-o", "{w}/out", "--steps", "5000"], "steps must be 1 … 1000", 2),
]


@pytest.mark.parametrize("argv, message, code", CLI_CASES, ids=[" ".join(c[0][:1] + c[0][3:]) for c in CLI_CASES])
def test_cli_refuses_bad_input_in_one_line(work, capsys, argv, message, code, monkeypatch):
    loads = []
    monkeypatch.setattr(cli, "_load", lambda args: loads.append(args) or pytest.fail("model loaded"))
    w = str(work)
    before = _state(work)
    rc = _run([a.format(w=w) for a in argv])
    err = capsys.readouterr().err
    assert rc == code
    assert message.format(w=w) in err, err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("ditfuse")]
    assert len(lines) == 1 and ": error: " in lines[0], err
    assert not loads
    assert _state(work) == before


def _run(argv) -> int:
    try:
        return cli.main(argv)
    except SystemExit as e:  # argparse's own errors (unknown choice, not a number): also one line, exit 2
        return e.code


def test_cli_debug_shows_the_traceback(work):
    with pytest.raises(validation.UserError, match="already exists"):
        cli.main(["fuse", f"{work}/vis.png", f"{work}/ir.png", "-o", f"{work}/old.png", "--debug"])


# ---- library ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pipe():
    return DiTFusePipeline.from_pretrained()


def _t(h=32, w=32, scale=1.0):
    return torch.rand(1, h, w, 3, generator=torch.Generator().manual_seed(0)) * scale


LIB_CASES = [
    (dict(image1=_t(scale=255.0)), "0..1"),
    (dict(image1=_t().masked_fill(_t() > 0.5, float("nan"))), "NaN"),
    (dict(image2=_t() * 3 - 1), "0..1"),
    (dict(max_side=8), "max_side must be 0"),
    (dict(max_side=-5), "max_side must be 0"),
    (dict(steps=1001), "steps must be 1 … 1000"),
    (dict(cfg=float("nan")), "cfg must be a finite number"),
    (dict(img_cfg=float("-inf")), "img_cfg must be a finite number"),
    (dict(min_scale=float("nan")), "min_scale must be a finite number"),
    (dict(task="xray"), "xray"),
    (dict(image2=torch.rand(3, 32, 32, 3), image1=torch.rand(2, 32, 32, 3)), "batch sizes do not match"),
]


@pytest.mark.parametrize("kw, message", LIB_CASES, ids=[next(iter(k)) + "-" + m for k, m in LIB_CASES])
def test_library_refuses_bad_input_before_sampling(pipe, kw, message, monkeypatch):
    monkeypatch.setattr(pipe, "sample", lambda *a, **k: pytest.fail("sampling started"))
    args = {"image1": _t(), "image2": _t(), **kw}
    with pytest.raises(ValueError, match=message.replace("+", r"\+").replace("(", r"\(")):
        pipe.fuse(args.pop("image1"), args.pop("image2"), **args)


def test_library_refuses_unknown_adjustment_and_missing_model(pipe, tmp_path):
    with pytest.raises(ValueError, match="LIGHT"):
        pipe.control(_t(), adjustment="LIGHT+++")
    with pytest.raises(FileNotFoundError, match="model folder not found"):
        DiTFusePipeline.from_pretrained(tmp_path / "nope")
    with pytest.raises(ValueError, match="lora_strength|LoRA strength"):
        pipe.set_lora_strength(math.inf)


def test_mismatched_sizes_follow_image_1_with_a_warning(pipe, caplog):
    """Policy: every input is resized to image 1's working size; a warning names both sizes when the aspect
    ratios differ (equal aspect ratios are the usual IR/visible case and need no word)."""
    a, b = _t(32, 48), _t(40, 40)
    with caplog.at_level("WARNING", logger="ditfuse_core"):
        cond = pipe.conditioning("<|image_1|> <|image_2|>", [a, b], max_side=48)
    assert cond.pixels[0][0].shape == cond.pixels[0][1].shape
    assert any("48×32" in r.getMessage() and "40×40" in r.getMessage() for r in caplog.records), caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="ditfuse_core"):
        cond = pipe.conditioning("<|image_1|> <|image_2|>", [_t(32, 48), _t(64, 96)], max_side=48)
    assert cond.pixels[0][0].shape == cond.pixels[0][1].shape and not caplog.records


# ---- nodes, through a real ComfyUI server ---------------------------------------------------------------------
def _node(prompt, cls):
    return next(k for k, v in prompt.items() if v["class_type"] == cls)


# (workflow, node class, input, value, message). Combo values: our message on ComfyUI < 0.7, which does not check
# V3 combos; from 0.7 ComfyUI's own "Value not in list".
SERVER_CASES = [
    ("ivif", "DiTFuseFuse", "task", "xray", "task must be one of ivif, mff, mef, generic; got 'xray'"),
    ("control", "DiTFuseControl", "adjustment", "LIGHT+++", "adjustment must be one of"),
    ("ivif", "DiTFuseModelLoader", "dtype", "int8", "dtype must be one of"),
    ("ivif", "DiTFuseExamplePair", "pair", "xyz", "pair must be one of ivif, mff, mef"),
    ("ivif", "DiTFuseFuse", "cfg", float("nan"), "cfg must be a finite number"),
    ("ivif", "DiTFuseFuse", "img_cfg", float("inf"), "img_cfg must be a finite number"),
    ("ivif", "DiTFuseFuse", "steps", 5000, "bigger than max of 1000"),  # ComfyUI's own min/max check
    ("ivif", "DiTFuseFuse", "max_side", 8, "max_side must be 0"),
    ("ivif", "DiTFuseModelLoader", "lora_strength", float("nan"), "lora_strength must be a finite"),
    ("segmentation", "DiTFuseSegment", "class_name", "  ", "needs a class name"),
    ("segmentation", "DiTFuseSegment", "steps", -2, "smaller than min of 0"),
]


@pytest.fixture(scope="module")
def server():
    import comfy_harness as H

    H.require(H.comfy_missing_reason())
    return H.shared_server()


def _post(server, prompt):
    import json

    # JSON as a browser would send it; NaN / Infinity are what Python's and ComfyUI's json accept
    status, body = server.request("POST", "/prompt", {"prompt": json.loads(json.dumps(prompt)),
                                                      "client_id": "bad-inputs"})
    return status, body


@pytest.mark.parametrize("wf, cls, name, value, message", SERVER_CASES, ids=[f"{c[1]}.{c[2]}" for c in SERVER_CASES])
def test_server_refuses_bad_values_with_http_400(server, wf, cls, name, value, message):
    import comfy_harness as H

    prompt = H.load_api(wf)
    nid = _node(prompt, cls)
    prompt[nid]["inputs"][name] = value
    status, body = _post(server, prompt)
    assert status == 400, body
    errs = body["node_errors"][nid]["errors"]
    assert any(message in e["details"] or message in e["message"] or "not in list" in e["message"].lower()
               for e in errs), errs
    assert {e["extra_info"]["input_name"] for e in errs} >= {name} or name in json.dumps(errs), errs


def _set_old_atime(folder: Path) -> None:
    for p in folder.rglob("*"):
        if p.is_file():
            st = p.stat()
            os.utime(p, ns=(st.st_mtime_ns - 10**12, st.st_mtime_ns))


def _atimes(folder: Path) -> dict:
    return {p: p.stat().st_atime_ns for p in folder.rglob("*") if p.is_file()}


def test_server_refuses_model_and_lora_paths_outside_the_folders(server, tmp_path):
    """Absolute and ../ names are refused at submit (HTTP 400) and nothing outside the model folders is read:
    a loadable model and LoRA placed outside keep their access times (relatime updates an access time older
    than the modification time on any read, checked first on a control file)."""
    import comfy_harness as H

    outside = tmp_path / "outside"
    shutil.copytree(BUNDLED_MODEL, outside / "model")
    lora = outside / "lora.safetensors"
    lora.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    control = outside / "control.bin"
    control.write_bytes(b"x" * 10)
    _set_old_atime(outside)
    before = _atimes(outside)
    control.read_bytes()
    atime_works = control.stat().st_atime_ns != before[control]
    rel = os.path.relpath(outside, H.HOME / "models" / "ditfuse")  # the server's extra_model_paths folder
    cases = [("model", str(outside / "model")), ("model", os.path.join(rel, "model")),
             ("model", "../" * 12 + str(outside / "model").lstrip("/")),
             ("lora", str(lora)), ("lora", os.path.join("loras", "..", rel, "lora.safetensors"))]
    for name, value in cases:
        prompt = H.load_api("ivif")
        nid = _node(prompt, "DiTFuseModelLoader")
        prompt[nid]["inputs"][name] = value
        status, body = _post(server, prompt)
        assert status == 400, (name, value, body)
        details = " ".join(e["details"] + " " + e["message"] for e in body["node_errors"][nid]["errors"])
        assert "not found" in details or "not in list" in details.lower(), details
    if atime_works:
        after = _atimes(outside)
        assert {p: t for p, t in after.items() if p != control} == {p: t for p, t in before.items() if p != control}

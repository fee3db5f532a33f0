"""Prompts, tokenizer ids, seeds, sizes, batches and the CLI, end to end on small models."""
import os
import subprocess
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
from PIL import Image

from ditfuse_core import prompts, sampler
from ditfuse_core.pipeline import DiTFusePipeline
from ditfuse_core.sequence import build_branch
from ditfuse_core.tiny import save_diffusers_folder, tiny_transformer, tiny_vae
from ditfuse_core.tokenizer import load_tokenizer

FAST = dict(steps=2, max_side=64)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_diffusers_folder(tmp_path_factory.mktemp("m") / "tiny", tiny_transformer(seed=21), tiny_vae(seed=22),
                                 defaults={"steps": 3, "cfg": 2.0, "img_cfg": 1.6, "max_side": 64})


@pytest.fixture(scope="module")
def pipe(model_dir):
    return DiTFusePipeline.from_pretrained(model_dir)


def _img(w, h, seed, gray=False):
    rng = np.random.default_rng(seed)
    shape = (h, w) if gray else (h, w, 3)
    return Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8))


TWO = ("This is the first image <img><|image_1|></img>, and this is the second image <img><|image_2|></img>. ")
REQ = "Please generate the image based on the following requirements: "


def test_default_prompts_are_the_authors_standard_prompts_byte_for_byte():
    """prompt.md §5 (Henry-Lee-real/DiTFuse), line breaks joined with single spaces."""
    assert prompts.fusion_prompt("ivif") == (
        "[FUSION]. <MULTI-MODALITIES>. " + TWO + "Please generate a fused image that preserves both the thermal "
        "information from the infrared modality and the texture details from the visible modality.")
    assert prompts.fusion_prompt("mff") == (
        "[FUSION]. <MULTI-FOCUS>. " + TWO + REQ + "Detect sharp regions via Laplacian focus measures, create an "
        "all-in-focus mask, and seamlessly blend them to produce a tack-sharp photo from foreground to background "
        "without visible seams.")
    assert prompts.fusion_prompt("mef") == (
        "[FUSION]. <MULTI-EXPOSURE>. " + TWO + REQ + "Merge the well-exposed mid-tones of image 1 with the shadow "
        "details of image 2, apply locally adaptive tone mapping to preserve texture contrast, and ensure natural "
        "global luminance.")
    assert prompts.fusion_prompt("generic") == (
        "[FUSION]. " + TWO + REQ + "Extract and fuse high-quality features from both images.")
    assert prompts.control_prompt("LIGHT+") == (
        "[CONTROL]. <LIGHT+>. " + TWO + REQ + "Extract and fuse high-quality features from both images. Slightly "
        "brighten the critical elements to make them stand out subtly.")
    assert prompts.segmentation_prompt("tree") == "[SEG]. " + TWO + REQ + "Segment the tree in the image."


def test_an_instruction_replaces_the_requirement_and_every_level_keeps_the_authors_shape():
    assert prompts.fusion_prompt("ivif", "keep the people bright") == (
        "[FUSION]. <MULTI-MODALITIES>. " + TWO + REQ + "keep the people bright")
    for adj in prompts.ADJUSTMENTS:
        text = prompts.control_prompt(adj.lower())
        assert text.startswith(f"[CONTROL]. <{adj}>. " + TWO + REQ + "Extract and fuse high-quality features "
                               "from both images. ")
        assert text.endswith(prompts.ADJUSTMENT_SENTENCES[adj]) and prompts.count_images(text) == 2
    assert prompts.control_prompt("<CONTRAST->", "flatter") == "[CONTROL]. <CONTRAST->. " + TWO + REQ + "flatter"
    assert prompts.segmentation_prompt("car", "only the red one").endswith(
        REQ + "Segment the car in the image. only the red one")
    assert all(len(ps) >= 2 for ps in prompts.PRESETS.values())
    assert prompts.PRESETS["mff"][0] in prompts.fusion_prompt("mff")
    assert prompts.image_only_prompt(2) == "<img><|image_1|></img> <img><|image_2|></img>"
    assert prompts.wrap("X") == ("<|user|>\nGenerate an image according to the following instructions\nX<|end|>\n"
                                 "<|assistant|>\n<|diffusion|>")
    with pytest.raises(ValueError):
        prompts.fusion_prompt("hdr")
    with pytest.raises(ValueError):
        prompts.control_prompt("SATURATION+")
    with pytest.raises(ValueError):
        prompts.segmentation_prompt("  ")


def test_wrapped_standard_prompt_token_ids_keep_their_shape():
    """The chat wrapper's prefix/suffix ids and the two image spans stay where the model expects them."""
    tok = load_tokenizer()
    ids = tok.encode(prompts.wrap(prompts.fusion_prompt("ivif")))
    assert ids[:6] == [1, 32010, 3251, 403, 385, 1967]
    assert ids[-8:-6] == [32007, 32001]
    br = build_branch(tok, prompts.wrap(prompts.fusion_prompt("ivif")), [6, 6])
    assert len(br.image_spans) == 2 and all(e - s == 6 for s, e in br.image_spans)


def test_same_seed_same_image_and_dtype_independent_noise(pipe, model_dir):
    a, b = _img(80, 64, 1), _img(80, 64, 2)
    x = pipe.fuse(a, b, seed=3, **FAST)[0]
    y = pipe.fuse(a, b, seed=3, **FAST)[0]
    z = pipe.fuse(a, b, seed=4, **FAST)[0]
    assert np.array_equal(np.asarray(x), np.asarray(y))
    assert not np.array_equal(np.asarray(x), np.asarray(z))
    # Noise comes from a CPU generator in float32 whatever the model dtype or device.
    n32 = sampler.initial_noise(3, 2, (4, 4, 4))
    assert torch.equal(n32, sampler.initial_noise(3, 2, (4, 4, 4)))
    assert torch.equal(n32[1:], sampler.initial_noise(4, 1, (4, 4, 4)))  # item i uses seed + i
    bf16 = DiTFusePipeline.from_pretrained(model_dir, dtype="bf16")
    assert bf16.dtype == torch.bfloat16
    w = bf16.fuse(a, b, seed=3, **FAST)[0]
    diff = np.abs(np.asarray(w, dtype=float) - np.asarray(x, dtype=float)).mean()
    assert diff < 8, diff  # same noise: bf16 stays close to fp32


@pytest.mark.parametrize("patch, channels", [(4, 16), (2, 4)], ids=["tiny: p 4, 16 ch", "OmniGen: p 2, 4 ch"])
def test_patch_embedding_in_bf16_matches_fp32(patch, channels):
    """`embed_patches` is OmniGenPatchEmbed (same weights, same tokens), and in bf16 on the CPU it stays within
    bf16 rounding: torch 2.13's oneDNN bf16 convolution gets the p 4, 16 channel shape wrong."""
    from ditfuse_core.tiny import tiny_transformer

    model = tiny_transformer(seed=3, patch_size=patch, in_channels=channels)
    x = torch.randn(2, channels, 8 * patch, 6 * patch, generator=torch.Generator().manual_seed(0))
    for is_input in (True, False):
        ref = model.patch_embedding(x, is_input_image=is_input)
        assert torch.allclose(model.embed_patches(x, is_input), ref, atol=1e-5)
    bf = model.to(torch.bfloat16)
    err = (bf.embed_patches(x, False).float() - ref).abs().max().item()
    assert err < 0.05 * ref.abs().max().item(), err
    model.to(torch.float32)


def test_auto_dtype_runs_the_vae_in_native_bf16_on_the_cpu(pipe, model_dir):
    """dtype "auto" on a CPU: transformer fp32; VAE bf16 where the CPU has it natively, else fp32; an explicit
    vae_dtype wins. The fusions agree closely either way."""
    from ditfuse_core.devices import cpu_has_native_bf16, resolve_vae_dtype

    cpu = torch.device("cpu")
    native = torch.bfloat16 if cpu_has_native_bf16() else torch.float32
    assert resolve_vae_dtype("auto", cpu) == native and resolve_vae_dtype("fp32", cpu) == torch.float32
    assert pipe.dtype == torch.float32 and pipe.vae.dtype == native
    fp32 = DiTFusePipeline.from_pretrained(model_dir, vae_dtype="fp32")
    assert fp32.dtype == torch.float32 and fp32.vae.dtype == torch.float32
    a, b = _img(80, 64, 1), _img(80, 64, 2)
    x, y = (np.asarray(p.fuse(a, b, seed=3, **FAST)[0], dtype=float) for p in (pipe, fp32))
    assert np.abs(x - y).mean() < 2, np.abs(x - y).mean()


def test_output_has_image_1_original_size(pipe):
    out = pipe.fuse(_img(517, 389, 5), _img(517, 389, 6, gray=True), task="mef", **FAST)
    assert out[0].size == (517, 389)
    t = pipe.fuse(torch.rand(1, 389, 517, 3), torch.rand(1, 389, 517, 3), **FAST)
    assert t.shape == (1, 389, 517, 3) and torch.isfinite(t).all()


def test_max_side_is_clamped_to_the_position_table(pipe):
    """A request above pos_embed_max_size tokens per side is processed at the largest supported side
    (instead of diffusers' "Height cannot be greater than pos_embed_max_size" error)."""
    assert pipe.largest_side == pipe.transformer.config.pos_embed_max_size * pipe.token_pixels
    (pix,), _ = pipe.preprocess([_img(pipe.largest_side + 300, 80, 7)], max_side=4096)
    assert max(pix.shape[-2:]) == pipe.largest_side
    # an explicitly larger output (e.g. an upscaled LATENT in ComfyUI) is refused in pixels, not tokens
    lat = pipe.encode(pix)
    cond = pipe.branches(prompts.control_prompt("LIGHT+"), [lat, lat])
    too_big = tuple(2 * x for x in lat.shape[-2:])
    with pytest.raises(ValueError, match=f"larger than .* supports \\({pipe.largest_side} px per side"):
        pipe.sample(cond, steps=1, latent_size=too_big)


def test_min_scale_enlarges_inputs_beyond_max_side_up_to_the_position_table(pipe):
    """A model's "min_scale" default (the bundled one: 2) works at least that much enlarged, where max_side
    (the authors' rule: longest side = max_side) would enlarge less; never above the position table; 0 turns
    it off, and an explicit max_side (a node's widget) is taken as asked. All inputs of a call share image 1's
    working side."""
    top, px = pipe.largest_side, pipe.token_pixels
    w = top // 3 // px * px
    assert pipe.working_side((w, w // 2), max_side=px, min_scale=0) == px
    assert pipe.working_side((w, w // 2), max_side=px, min_scale=2) == 2 * w
    assert pipe.working_side((w, w // 2), max_side=top, min_scale=2) == top
    assert pipe.working_side((top, 10), max_side=px, min_scale=2) == top
    saved = dict(pipe.defaults)
    try:
        pipe.defaults.update(max_side=px, min_scale=2)
        for max_side in (None, 0):
            pix, sizes = pipe.preprocess([_img(w, w // 2, 1), _img(w // 2, w // 2, 2)], max_side)
            assert [tuple(p.shape[-2:]) for p in pix] == [(w, 2 * w), (2 * w, 2 * w)] and sizes[0] == (w, w // 2)
        assert pipe.working_side((w, w // 2), max_side=px) == px
        assert pipe.working_side((w, w // 2), max_side=px, min_scale=2) == 2 * w
    finally:
        pipe.defaults.clear()
        pipe.defaults.update(saved)


def test_batches_broadcast_and_every_item_is_processed(pipe):
    a = torch.rand(3, 48, 64, 3)
    b = torch.rand(1, 48, 64, 3)
    out = pipe.fuse(a, b, seed=0, **FAST)
    assert out.shape == (3, 48, 64, 3)
    single = pipe.fuse(a[2:3], b, seed=2, **FAST)
    assert torch.allclose(out[2], single[0], atol=1e-6)  # item i of a batch = a single run with seed + i
    with pytest.raises(ValueError, match="batches must be equal or 1"):
        pipe.fuse(torch.rand(2, 48, 64, 3), torch.rand(3, 48, 64, 3), **FAST)


def test_progress_reports_every_step_and_can_cancel(pipe):
    seen = []
    pipe.fuse(_img(64, 48, 1), _img(64, 48, 2), progress=lambda s, t: seen.append((s, t)), steps=3, max_side=64)
    assert seen == [(0, 3), (1, 3), (2, 3), (3, 3)]  # 0 before the prefill: a bar shows from the start

    class Cancelled(Exception):
        pass

    def cancel(step, total):
        raise Cancelled

    with pytest.raises(Cancelled):
        pipe.fuse(_img(64, 48, 1), _img(64, 48, 2), progress=cancel, **FAST)


def test_control_and_segment_shapes(pipe):
    out = pipe.control(_img(70, 50, 3), adjustment="CONTRAST-", **FAST)
    assert out[0].size == (70, 50)
    overlay, mask = pipe.segment(torch.rand(2, 50, 70, 3), class_name="person", **FAST)
    assert overlay.shape == (2, 50, 70, 3)
    assert mask.shape == (2, 50, 70) and set(mask.unique().tolist()) <= {0.0, 1.0}


def test_control_and_segment_take_the_pair_and_one_image_is_given_as_both(pipe):
    """The authors' [CONTROL] / [SEG] layout: two image spans; one image == that image passed twice."""
    a, b = _img(70, 50, 3), _img(70, 50, 4)
    one = pipe.control(a, adjustment="LIGHT+", seed=5, **FAST)[0]
    twice = pipe.control(a, a, adjustment="LIGHT+", seed=5, **FAST)[0]
    assert np.array_equal(np.asarray(one), np.asarray(twice))
    pair = pipe.control(a, b, adjustment="LIGHT+", seed=5, **FAST)[0]
    assert not np.array_equal(np.asarray(one), np.asarray(pair))
    ov1, m1 = pipe.segment(a, class_name="tree", seed=5, **FAST)
    ov2, m2 = pipe.segment(a, a, class_name="tree", seed=5, **FAST)
    assert np.array_equal(np.asarray(ov1[0]), np.asarray(ov2[0])) and torch.equal(m1, m2)
    (pix, _) = pipe.preprocess([a, b], max_side=64)
    lats = [pipe.encode(p) for p in pix]
    for text in (prompts.control_prompt("LIGHT-"), prompts.segmentation_prompt("tree")):
        assert len(pipe.branches(text, lats).cond.image_spans) == 2


def test_segment_mask_is_measured_against_the_fused_content():
    """The mask is where the output is bluer than the plain average of the two inputs (what fusing alone
    gives), not than image 1."""
    from ditfuse_core.pipeline import blue_mask

    red, green = torch.zeros(8, 8, 3), torch.zeros(8, 8, 3)
    red[..., 0], green[..., 1] = 0.8, 0.8
    fused = (red + green) / 2
    overlay = fused.clone()
    overlay[:4, :, 2] += 0.5
    m = blue_mask(overlay, (red + green) / 2) > 0.12
    assert m[:4].all() and not m[4:].any()


def test_sampling_defaults_follow_the_model(pipe):
    """0 steps / negative guidance mean the model folder's own defaults (ditfuse.json), one rule everywhere."""
    d = pipe.defaults
    assert pipe.sampling() == pipe.sampling(0, -1, -1) == {"steps": d["steps"], "cfg": d["cfg"],
                                                            "img_cfg": d["img_cfg"]}
    assert pipe.sampling(7, 0.0, 3.5) == {"steps": 7, "cfg": 0.0, "img_cfg": 3.5}
    seen = []
    pipe.fuse(_img(64, 48, 1), _img(64, 48, 2), steps=0, cfg=-1, img_cfg=-1, max_side=64,
              progress=lambda s, t: seen.append(t))
    assert seen == [d["steps"]] * (d["steps"] + 1)  # (0, total) before the prefill, then one per step


def test_non_finite_settings_fail_before_any_work(pipe):
    """NaN passes ComfyUI's min/max check and gave an all-black image reported as success."""
    a, b = _img(32, 32, 1), _img(32, 32, 2)
    for kw, what in ((dict(cfg=float("nan")), "cfg"), (dict(img_cfg=float("inf")), "img_cfg"),
                     (dict(steps=1001), "steps"), (dict(steps=-3), "steps")):
        with pytest.raises(ValueError, match=what):
            pipe.fuse(a, b, max_side=32, **kw)
    with pytest.raises(ValueError, match="LoRA strength must be a finite number"):
        pipe.set_lora_strength(float("nan"))


def test_sampler_stops_at_the_first_non_finite_step(pipe):
    saved = pipe.transformer.proj_out.bias.data.clone()
    try:
        pipe.transformer.proj_out.bias.data.fill_(float("nan"))
        with pytest.raises(FloatingPointError, match="NaN/inf at step 1 of 2"):
            pipe.fuse(_img(32, 32, 1), _img(32, 32, 2), steps=2, max_side=32)
    finally:
        pipe.transformer.proj_out.bias.data.copy_(saved)


def test_cli_fuses_and_writes_a_png(model_dir, tmp_path):
    _img(100, 60, 7).save(tmp_path / "vis.png")
    _img(100, 60, 8, gray=True).save(tmp_path / "ir.png")
    out = tmp_path / "fused.png"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-m", "ditfuse_core.cli", "fuse", str(tmp_path / "vis.png"),
                        str(tmp_path / "ir.png"), "--task", "ivif", "--model", str(model_dir), "--steps", "2",
                        "--max-side", "64", "--seed", "1", "-o", str(out)],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert Image.open(out).size == (100, 60)
    (tmp_path / "pairs" / "image1").mkdir(parents=True)
    (tmp_path / "pairs" / "image2").mkdir(parents=True)
    for name in ("a.png", "b.png"):
        _img(40, 40, 1).save(tmp_path / "pairs" / "image1" / name)
        _img(40, 40, 2).save(tmp_path / "pairs" / "image2" / name)
    r = subprocess.run([sys.executable, "-m", "ditfuse_core.cli", "batch", str(tmp_path / "pairs"), "--model",
                        str(model_dir), "--steps", "1", "--max-side", "32", "-o", str(tmp_path / "batch_out")],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (tmp_path / "batch_out").iterdir()) == ["a.png", "b.png"]


def test_cli_control_and_segment_take_one_or_two_images(model_dir, tmp_path):
    """`ditfuse control A.png [B.png]`: one image equals that image given twice, byte for byte."""
    _img(60, 40, 7).save(tmp_path / "a.png")
    _img(60, 40, 8).save(tmp_path / "b.png")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    common = ["--model", str(model_dir), "--steps", "1", "--max-side", "32", "--seed", "2"]

    def run(*args):
        r = subprocess.run([sys.executable, "-m", "ditfuse_core.cli", *args, *common], capture_output=True,
                           text=True, env=env, timeout=300)
        assert r.returncode == 0, r.stderr

    a, b = str(tmp_path / "a.png"), str(tmp_path / "b.png")
    run("control", a, "-o", str(tmp_path / "one.png"))
    run("control", a, a, "-o", str(tmp_path / "twice.png"))
    run("segment", a, b, "--class", "tree", "-o", str(tmp_path / "seg.png"), "--mask", str(tmp_path / "m.png"))
    assert (tmp_path / "one.png").read_bytes() == (tmp_path / "twice.png").read_bytes()
    assert Image.open(tmp_path / "seg.png").size == Image.open(tmp_path / "m.png").size == (60, 40)


def test_clear_errors(model_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="model folder not found"):
        DiTFusePipeline.from_pretrained(tmp_path / "nope")
    with pytest.raises(ValueError, match="unknown dtype"):
        DiTFusePipeline.from_pretrained(model_dir, dtype="int8")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            DiTFusePipeline.from_pretrained(model_dir, device="cuda")


def test_condition_attention_by_blocks_equals_the_masked_attention():
    """Prefill attends image spans block by block instead of under a materialised [L, L] mask: same result."""
    from ditfuse_core import transformer as tr
    from ditfuse_core.sequence import Branch, condition_mask

    spans = [(7, 7 + 48), (60, 60 + 48)]  # text, image 1, text, image 2, text
    length = 60 + 48 + 9
    branch = Branch(torch.zeros(length, dtype=torch.long), spans, [0, 1])
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 2, length, 16, generator=g) for _ in range(3))
    dense = tr._attention(q, k, v, condition_mask(branch)[None])
    blocks = tr._attention(q, k, v, tr.ConditionMask(spans, length))
    assert torch.allclose(dense, blocks, atol=1e-6)

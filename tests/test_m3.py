"""M3 data: block degradations, seeds, control and segmentation targets (no shared data needed except
for the last test, which skips cleanly without it)."""
import numpy as np
import pytest

from ditfuse_core import prompts
from ditfuse_core.training import m3


def textured(h=256, w=256, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def smooth(h=256, w=256, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = 100 + 60 * np.sin(xx / 9.0) * np.cos(yy / 13.0)
    img = np.stack([base, base * 0.8 + 20, 255 - base], -1) + rng.normal(0, 8, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def _changed(a, b, blk):
    sl = (slice(blk.y, blk.y + blk.size), slice(blk.x, blk.x + blk.size))
    return bool(np.any(a[sl] != b[sl]))


@pytest.mark.parametrize("seed", range(12))
def test_blocks_degraded_in_exactly_one_copy(seed):
    clean = textured(seed=seed)
    rng = np.random.default_rng(seed)
    a, b, blocks = m3.m3_pair(clean, rng)
    assert blocks and len({blk.size for blk in blocks}) == 1 and blocks[0].size in m3.BLOCK_SIZES
    covered = np.zeros(clean.shape[:2], bool)
    for blk in blocks:
        assert len(blk.copies) == 1
        c1, c2 = _changed(a, clean, blk), _changed(b, clean, blk)
        assert (c1, c2) == ((True, False) if blk.copies == (1,) else (False, True))
        region = covered[blk.y:blk.y + blk.size, blk.x:blk.x + blk.size]
        assert not region.any(), "blocks overlap"
        region[:] = True
    # outside the blocks both copies equal the clean image
    assert np.array_equal(a[~covered], clean[~covered]) and np.array_equal(b[~covered], clean[~covered])


@pytest.mark.parametrize("n_blocks", [1, 3, 4, 8, 13])
def test_both_mode_counts(n_blocks):
    clean = textured(seed=n_blocks)
    rng = np.random.default_rng(n_blocks)
    a, b, blocks = m3.m3_pair(clean, rng, block_size=32, n_blocks=n_blocks, both=True)
    assert len(blocks) == n_blocks
    n_both = sum(1 for blk in blocks if blk.copies == (1, 2))
    assert n_both == max(1, n_blocks // 4)
    for blk in blocks:
        c1, c2 = _changed(a, clean, blk), _changed(b, clean, blk)
        assert c1 == (1 in blk.copies) and c2 == (2 in blk.copies)


def test_each_degradation_kind_and_parameters():
    clean = textured()
    seen = set()
    for seed in range(40):
        _, _, blocks = m3.m3_pair(clean, np.random.default_rng(seed), block_size=64)
        for blk in blocks:
            for d in blk.degradations:
                seen.add(d["kind"])
                if d["kind"] == "noise" and d["noise"] == "gaussian":
                    assert 10 <= d["sigma"] <= 35
                if d["kind"] == "noise" and d["noise"] == "saltpepper":
                    assert 0.01 <= d["ratio"] <= 0.03
                if d["kind"] == "blur":
                    assert d["k"] in m3.BLUR_KERNELS and d["blur"] in ("gaussian", "box", "median")
                    if d["blur"] == "gaussian":
                        assert 0.8 <= d["sigma"] <= 3.0
    assert seen == set(m3.DEGRADATIONS)


def test_seeds_reproduce():
    clean = textured()
    r1 = m3.m3_pair(clean, np.random.default_rng(5), both=True)
    r2 = m3.m3_pair(clean, np.random.default_rng(5), both=True)
    r3 = m3.m3_pair(clean, np.random.default_rng(6), both=True)
    assert np.array_equal(r1[0], r2[0]) and np.array_equal(r1[1], r2[1])
    assert not (np.array_equal(r1[0], r3[0]) and np.array_equal(r1[1], r3[1]))


def _synthetic_sources(tmp_path, n=3):
    from PIL import Image

    out = []
    for i in range(n):
        img = smooth(200, 300, seed=i)
        lab = np.zeros((200, 300), np.uint8)
        lab[40:120, 60:200] = 4  # cow
        lab[150:, :] = 2  # grass
        Image.fromarray(img).save(tmp_path / f"im{i}.png")
        Image.fromarray(lab).save(tmp_path / f"lab{i}.png")
        out.append(m3.Source(str(tmp_path / f"im{i}.png"), str(tmp_path / f"lab{i}.png")))
    return out


def test_generator_deterministic_all_tasks(tmp_path):
    srcs = _synthetic_sources(tmp_path)
    g1, g2 = m3.M3Generator(srcs, seed=3, size=128), m3.M3Generator(srcs, seed=3, size=128)
    g3 = m3.M3Generator(srcs, seed=4, size=128)
    for task in ("m3", "ivif", "mff", "mef", "control", "seg"):
        for i in range(3):
            s1, s2 = g1.sample(i, task), g2.sample(i, task)
            assert s1.instruction == s2.instruction
            assert all(np.array_equal(x, y) for x, y in zip(s1.inputs, s2.inputs))
            assert np.array_equal(s1.target, s2.target)
            assert s1.target.shape == (128, 128, 3) and all(x.shape == (128, 128, 3) for x in s1.inputs)
            assert len(s1.inputs) == 2  # every task takes the pair, as the authors' prompts do
            assert all(f"<|image_{k + 1}|>" in s1.instruction for k in range(2))
    assert any(not np.array_equal(g1.sample(i).target, g3.sample(i).target) for i in range(5))
    # the task tags
    assert g1.sample(0, "ivif").instruction.startswith("[FUSION]. <MULTI-MODALITIES>.")
    assert g1.sample(0, "mff").instruction.startswith("[FUSION]. <MULTI-FOCUS>.")
    assert g1.sample(0, "mef").instruction.startswith("[FUSION]. <MULTI-EXPOSURE>.")
    assert g1.sample(0, "m3").instruction.startswith("[FUSION]. This is the first image")
    assert g1.sample(0, "control").instruction.startswith("[CONTROL]")
    assert g1.sample(0, "seg").instruction.startswith("[SEG]")


@pytest.mark.parametrize("kind", m3.CONTROL_KINDS)
def test_control_targets_move_in_right_direction(kind):
    for seed in range(3):
        img = smooth(seed=seed)
        t = m3.control_target(img, kind).astype(np.float64)
        x = img.astype(np.float64)
        if kind.startswith("LIGHT"):
            delta = t.mean() - x.mean()
            assert (delta > 0) == ("+" in kind) and abs(delta) > 3
        else:
            d = t.std() - x.std()
            assert (d > 0) == kind.endswith("+") and abs(d) > 2
    # ++ moves further than +, -- further than -
    img = smooth()
    m = {k: m3.control_target(img, k).mean() for k in ("LIGHT++", "LIGHT+", "LIGHT-", "LIGHT--")}
    assert m["LIGHT++"] > m["LIGHT+"] > img.mean() > m["LIGHT-"] > m["LIGHT--"]


def test_seg_overlay_blue_exactly_on_mask():
    img = textured(seed=1)
    img = np.clip(img, 0, 200).astype(np.uint8)  # keep room below pure blue
    mask = np.zeros(img.shape[:2], bool)
    mask[30:90, 50:170] = True
    mask[200:, :40] = True
    out = m3.seg_overlay(img, mask)
    diff = np.any(out != img, axis=-1)
    assert np.array_equal(diff, mask)
    o, i = out[mask].astype(int), img[mask].astype(int)
    assert np.all(o[:, 2] >= i[:, 2]) and np.all(o[:, 0] <= i[:, 0]) and np.all(o[:, 1] <= i[:, 1])
    assert np.all(o[:, 2] > o[:, 0]) and np.all(o[:, 2] > o[:, 1])


def test_seg_sample_overlay_matches_class(tmp_path):
    srcs = _synthetic_sources(tmp_path)
    g = m3.M3Generator(srcs, seed=0, size=128)
    s = g.sample(2, "seg")
    assert s.info["class"] in s.instruction
    a, b = (x.astype(int) for x in s.inputs)
    clean = np.all(a == b, axis=-1)  # an M3 pair: each degraded block is in one copy only
    assert 0 < clean.mean() < 1
    blue = np.any(s.target != s.inputs[0], axis=-1) & clean
    assert blue.any() and blue.mean() < 1.0
    t = s.target.astype(int)
    assert np.all(t[blue][:, 2] - np.maximum(t[blue][:, 0], t[blue][:, 1]) >= a[blue][:, 2] - np.maximum(
        a[blue][:, 0], a[blue][:, 1]))


@pytest.mark.parametrize("index", range(4))
def test_control_samples_fuse_an_m3_pair_into_the_adjusted_source(tmp_path, index):
    """The authors' [CONTROL] layout: two degraded copies in, the adjusted clean source out."""
    g = m3.M3Generator(_synthetic_sources(tmp_path), seed=1, size=128)
    s = g.sample(index, "control")
    assert s.instruction == prompts.control_prompt(s.info["kind"])
    a, b = s.inputs
    clean = np.all(a == b, axis=-1)
    assert 0 < clean.mean() < 1
    if s.info["kind"].startswith("LIGHT"):  # a pointwise curve: on undamaged pixels the target is the curve of them
        assert np.array_equal(s.target[clean], m3.control_target(a, s.info["kind"])[clean])


def test_fusion_task_synthesis_properties():
    img = smooth(seed=2)
    rng = np.random.default_rng(0)
    over, under, _ = m3.exposure_pair(img, rng)
    assert over.mean() > img.mean() > under.mean()
    near = np.zeros(img.shape[:2], np.float32)
    near[64:192, 64:192] = 1
    far_img, near_img, _ = m3.focus_pair(img, np.random.default_rng(1), near)
    c = (slice(96, 160), slice(96, 160))  # foreground: sharp in image 2 (near-focus) only
    b = (slice(0, 40), slice(0, 40))      # background: sharp in image 1 (far-focus) only
    err = lambda a, sl: np.abs(a[sl].astype(int) - img[sl].astype(int)).mean()  # noqa: E731
    assert err(near_img, c) < err(far_img, c) and err(far_img, b) < err(near_img, b)
    hot = np.zeros(img.shape[:2], np.float32)
    hot[100:140, 100:130] = 1
    vis, ir, target, _ = m3.ivif_pair(img, np.random.default_rng(2), hot)
    assert np.array_equal(ir[..., 0], ir[..., 1]) and np.array_equal(ir[..., 1], ir[..., 2])
    assert vis.shape == ir.shape == target.shape == img.shape
    # warm objects are bright in the infrared copy and brightened in the target; elsewhere target = clean
    assert ir[110:130, 105:125].mean() > ir.mean()
    assert target[110:130, 105:125].mean() > img[110:130, 105:125].mean()
    assert np.array_equal(target[:60, :60], img[:60, :60])


def test_write_jsonl(tmp_path):
    import json

    srcs = _synthetic_sources(tmp_path)
    p = m3.write_jsonl(tmp_path / "out", 6, seed=1, size=64, sources=srcs)
    rows = [json.loads(line) for line in p.read_text().splitlines()]
    assert len(rows) == 6
    for r in rows:
        assert set(r) >= {"instruction", "input_images", "output_image"}
        assert (p.parent / r["output_image"]).exists()
        assert all((p.parent / q).exists() for q in r["input_images"])


def test_shared_data_sources():
    root = m3.data_root()
    if not (root / "train").is_dir():
        pytest.skip("shared/data/train not available")
    srcs = m3.scan_sources(root)
    assert sum(s.kind == "msrc" for s in srcs) == 591 and sum(bool(s.labels) for s in srcs) == 591
    assert sum(s.kind == "roadscene" and bool(s.ir) for s in srcs) == 167
    g = m3.M3Generator(srcs, seed=0, size=128)
    s = g.sample(0, "seg")
    assert s.target.shape == (128, 128, 3)

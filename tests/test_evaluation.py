"""`ditfuse eval`: pair discovery in DiTFuse's order, report files, CLI wiring, DiTFuse hookup."""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ditfuse_core import evaluation
from ditfuse_core.evaluation import discover_pairs

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "eval"


def _write(path: Path, seed: int, shape=(40, 56), color=False):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, shape + ((3,) if color else ()), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(x).save(path)


def test_discovery_on_synthetic_layouts(tmp_path):
    for n in ("p1", "p2"):
        _write(tmp_path / "ivif" / "vi" / f"{n}.png", 1, color=True)
        _write(tmp_path / "ivif" / "ir" / f"{n}.png", 2)
    _write(tmp_path / "ivif" / "vi" / "lonely.png", 3)
    pairs = discover_pairs("ivif", tmp_path / "ivif")
    assert [p.name for p in pairs] == ["p1", "p2"]
    assert pairs[0].image1.parent.name == "vi" and pairs[0].image2.parent.name == "ir"
    _write(tmp_path / "mff" / "01_a.png", 1)
    _write(tmp_path / "mff" / "01_b.png", 2)
    (p,) = discover_pairs("mff", tmp_path / "mff")
    assert (p.image1.stem, p.image2.stem) == ("01_b", "01_a")  # image 1 = far focus
    _write(tmp_path / "mef" / "Arno_A.jpg", 1)
    _write(tmp_path / "mef" / "Arno_B.jpg", 2)
    (p,) = discover_pairs("mef", tmp_path / "mef")
    assert (p.image1.stem, p.image2.stem) == ("Arno_B", "Arno_A")  # image 1 = over-exposed
    with pytest.raises(FileNotFoundError):
        discover_pairs("mef", tmp_path / "mff")


def test_discovery_on_shared_data():
    if not DATA.exists():
        pytest.skip("shared eval data not available")
    tno = discover_pairs("ivif", DATA / "ivif" / "tno")
    assert len(tno) == 25 and tno[0].image1.parent.name == "vi"
    lytro = discover_pairs("mff", DATA / "mff" / "lytro")
    assert len(lytro) == 20 and lytro[0].image1.stem.endswith("_b")
    mefb = discover_pairs("mef", DATA / "mef" / "mefb")
    assert len(mefb) == 50 and all(p.image1.stem.endswith("_B") for p in mefb)


def _args(tmp_path, pairs, **kw):
    p = argparse.ArgumentParser()
    evaluation.add_arguments(p)
    argv = ["--task", "ivif", "--pairs", str(pairs), "--out", str(tmp_path / "report"), "--quiet"]
    for k, v in kw.items():
        argv += [f"--{k}", v]
    return p.parse_args(argv)


def test_eval_writes_report(tmp_path):
    for n in ("p1", "p2"):
        _write(tmp_path / "d" / "vi" / f"{n}.png", 1, color=True)
        _write(tmp_path / "d" / "ir" / f"{n}.png", 2)
    args = _args(tmp_path, tmp_path / "d", methods="average,max", metrics="EN,SSIM,Qcv")
    means = evaluation.run(args)
    out = tmp_path / "report"
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert len(rows) == 2 * 2 * 3 and set(rows[0]) == {"pair", "method", "metric", "value"}
    table = (out / "table.md").read_text()
    assert "Qcv ↓" in table and "SSIM ↑" in table
    best_qcv = min(means, key=lambda m: means[m]["Qcv"])
    line = next(l for l in table.splitlines() if l.startswith(f"| {best_qcv} |"))
    assert line.split("|")[4].strip().startswith("**")  # lower-is-better column marks the minimum
    assert (out / "contact_sheet.png").exists()
    assert sorted(p.name for p in (out / "bars").iterdir()) == ["EN.png", "Qcv.png", "SSIM.png"]
    assert (out / "fused" / "max" / "p1.png").exists()


def test_register_adds_eval_subcommand(tmp_path):
    parser = argparse.ArgumentParser(prog="ditfuse")
    evaluation.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["eval", "--task", "mff", "--pairs", "x", "--out", "y"])
    assert args.func is evaluation.run and args.methods == "gff,lp,average,max"


def test_eval_calls_ditfuse_pipeline(tmp_path, monkeypatch):
    pipeline = pytest.importorskip("ditfuse_core.pipeline")
    calls = {}

    class Fake:
        @classmethod
        def from_pretrained(cls, **kw):
            calls["load"] = kw
            return cls()

        def fuse(self, img1, img2, task, seed, steps, instruction):
            calls["fuse"] = (img1.size, img2.size, task, seed, steps, instruction)
            return [img1]

    monkeypatch.setattr(pipeline, "DiTFusePipeline", Fake)
    _write(tmp_path / "d" / "vi" / "p.png", 1, color=True)
    _write(tmp_path / "d" / "ir" / "p.png", 2)
    evaluation.run(_args(tmp_path, tmp_path / "d", methods="ditfuse", metrics="EN", seed="3", steps="2",
                         instruction="Keep the warm targets bright."))
    assert calls["load"] == {"model": None, "lora": None, "device": "cpu", "dtype": "auto", "weights": "auto"}
    assert calls["fuse"] == ((56, 40), (56, 40), "ivif", 3, 2, "Keep the warm targets bright.")


def test_a_resumed_eval_reuses_only_fusions_of_the_same_model_and_settings(tmp_path, monkeypatch):
    """Fused images in --out are reused on a rerun, DiTFuse's only while the model's files and the settings are
    the same: a model rebuilt in place (same size, other bytes), other steps or another instruction fuse again."""
    pipeline = pytest.importorskip("ditfuse_core.pipeline")
    fused = []

    class Fake:
        @classmethod
        def from_pretrained(cls, **kw):
            return cls()

        def fuse(self, img1, img2, task, seed, steps, instruction):
            fused.append(steps)
            return [img1]

    monkeypatch.setattr(pipeline, "DiTFusePipeline", Fake)
    _write(tmp_path / "d" / "vi" / "p.png", 1, color=True)
    _write(tmp_path / "d" / "ir" / "p.png", 2)
    model = tmp_path / "model"
    model.mkdir()
    (model / "weights.bin").write_bytes(bytes(300_000))

    def run(steps, **kw):
        fused.clear()
        evaluation.run(_args(tmp_path, tmp_path / "d", methods="ditfuse,average", metrics="EN", steps=steps,
                             model=str(model), **kw))
        return len(fused)

    assert run("2") == 1
    assert run("2") == 0                                           # resumed: reused
    (model / "weights.bin").write_bytes(bytes(299_999) + b"\1")    # rebuilt in place, same size
    assert run("2") == 1
    assert run("2") == 0
    assert run("3") == 1                                           # other settings
    assert run("3", instruction="Keep the warm targets bright.") == 1  # another instruction
    assert run("3", instruction="Keep the warm targets bright.") == 0
    assert run("3") == 1                                           # the standard prompt again


def test_eval_passes_weights_to_the_model(tmp_path, monkeypatch):
    """`ditfuse eval --weights fp8` stores the model's weights as asked (issue #27), like `ditfuse fuse`."""
    pipeline = pytest.importorskip("ditfuse_core.pipeline")
    from ditfuse_core.weight_storage import WEIGHTS

    assert tuple(evaluation.WEIGHTS) == tuple(WEIGHTS)
    loads = []

    class Fake:
        @classmethod
        def from_pretrained(cls, **kw):
            loads.append(kw["weights"])
            return cls()

        def fuse(self, img1, img2, task, seed, steps, instruction):
            return [img1]

    monkeypatch.setattr(pipeline, "DiTFusePipeline", Fake)
    _write(tmp_path / "d" / "vi" / "p.png", 1, color=True)
    _write(tmp_path / "d" / "ir" / "p.png", 2)
    parser = argparse.ArgumentParser(prog="ditfuse")
    evaluation.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["eval", "--task", "ivif", "--pairs", str(tmp_path / "d"), "--out", str(tmp_path / "o"),
                              "--methods", "ditfuse", "--metrics", "EN", "--steps", "1", "--weights", "fp8",
                              "--quiet"])
    args.func(args)
    assert loads == ["fp8"]
    with pytest.raises(SystemExit):
        parser.parse_args(["eval", "--task", "ivif", "--pairs", "x", "--out", "y", "--weights", "int4"])

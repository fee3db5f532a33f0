"""The M3 generator: a sample is a pure function of ``(seed, index)`` and the sources, so data are
reproducible without storing them; `write_jsonl` materialises them in OmniGen's format."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from .degradations import (CONTROL_KINDS, _luma, _u8, control_target, exposure_pair, focus_pair, ivif_pair,
                           m3_pair, seg_overlay)
from ... import prompts
from .instructions import CLASS_WORDS, MSRC_CLASSES, SEG_EXTRAS, fusion_instruction, pick_requirement
from .sources import Source, load_gray, load_rgb, scan_sources


IVIF_GRAY = 0.35  # fraction of IVIF samples made from a gray scene
DEFAULT_MIX = {"m3": 0.30, "ivif": 0.18, "mff": 0.16, "mef": 0.16, "control": 0.10, "seg": 0.10}


@dataclass
class Sample:
    task: str               # m3 | ivif | mff | mef | control | seg
    instruction: str
    inputs: list            # list of uint8 [H, W, 3]
    target: np.ndarray
    info: dict


def random_crop(img: np.ndarray, lab: np.ndarray | None, ir: np.ndarray | None, size: int,
                 rng: np.random.Generator):
    """Rescale by U[0.6, 1.0] of the native resolution (more when the short side would not cover
    ``size``), then crop ``size``×``size``: content density stays close to that of real photos at the
    pipeline's working size instead of whole images squeezed into small crops."""
    from PIL import Image

    h, w = img.shape[:2]
    scale = max(size / min(h, w), float(rng.uniform(0.6, 1.0)))
    if abs(scale - 1.0) > 1e-3:
        nh, nw = max(size, int(round(h * scale))), max(size, int(round(w * scale)))
        img = np.asarray(Image.fromarray(img).resize((nw, nh), Image.BICUBIC))
        if lab is not None:
            lab = np.asarray(Image.fromarray(lab).resize((nw, nh), Image.NEAREST))
        if ir is not None:
            ir = np.asarray(Image.fromarray(ir).resize((nw, nh), Image.BICUBIC))
        h, w = nh, nw
    y, x = int(rng.integers(h - size + 1)), int(rng.integers(w - size + 1))
    sl = (slice(y, y + size), slice(x, x + size))
    img = img[sl]
    lab = lab[sl] if lab is not None else None
    ir = ir[sl] if ir is not None else None
    if rng.random() < 0.5:
        img = img[:, ::-1]
        lab = lab[:, ::-1] if lab is not None else None
        ir = ir[:, ::-1] if ir is not None else None
    return np.ascontiguousarray(img), (np.ascontiguousarray(lab) if lab is not None else None), \
        (np.ascontiguousarray(ir) if ir is not None else None)


class M3Generator:
    """Deterministic sample generator: ``gen.sample(i)`` depends only on ``(seed, i)`` and the sources."""

    def __init__(self, sources: Sequence[Source] | None = None, seed: int = 0, size: int = 256,
                 mix: dict | None = None, both_prob: float = 0.25, data_root=None):
        self.sources = list(sources) if sources is not None else scan_sources(data_root)
        if not self.sources:
            raise FileNotFoundError("no training images found (shared/data/train or a pack)")
        self.seed = int(seed)
        self.size = int(size)
        self.mix = dict(mix or DEFAULT_MIX)
        self.both_prob = both_prob
        self.labelled = [i for i, s in enumerate(self.sources) if s.labels]
        self._cache: dict = {}
        if not self.labelled:
            self.mix.pop("seg", None)
        tot = sum(self.mix.values())
        self.tasks = list(self.mix)
        self.probs = np.array([self.mix[t] / tot for t in self.tasks])

    def _load(self, i: int):
        if i not in self._cache:
            s = self.sources[i]
            img = load_rgb(s.image)
            lab = load_gray(s.labels) if s.labels else None
            ir = load_gray(s.ir) if s.ir else None
            if ir is not None and ir.shape != img.shape[:2]:
                ir = None
            if len(self._cache) > 4096:
                self._cache.clear()
            self._cache[i] = (img, lab, ir)
        return self._cache[i]

    def __len__(self):
        return 2 ** 31 - 1

    def sample(self, index: int, task: str | None = None) -> Sample:
        rng = np.random.default_rng([self.seed, int(index)])
        task = task or self.tasks[int(rng.choice(len(self.tasks), p=self.probs))]
        pool = self.labelled if task == "seg" else range(len(self.sources))
        src = int(rng.choice(pool)) if task == "seg" else int(rng.integers(len(self.sources)))
        img, lab, ir = self._load(src)
        if task == "seg":
            # crop until the crop contains a usable class (a few tries)
            for _ in range(6):
                c_img, c_lab, _ = random_crop(img, lab, None, self.size, rng)
                ids = [int(v) for v in np.unique(c_lab) if 0 < v <= len(MSRC_CLASSES)
                       and (c_lab == v).mean() > 0.01]
                if ids:
                    break
            else:  # the whole image downsized instead
                ids = [int(v) for v in np.unique(lab) if 0 < v <= len(MSRC_CLASSES)]
            cid = ids[int(rng.integers(len(ids)))]
            cname = MSRC_CLASSES[cid - 1]
            word = CLASS_WORDS.get(cname, cname)
            mask = c_lab == cid
            extra = SEG_EXTRAS[int(rng.integers(len(SEG_EXTRAS)))]
            a, b, _ = m3_pair(c_img, rng)  # the authors' layout: fuse an M3 pair and segment
            return Sample("seg", prompts.segmentation_prompt(word, extra), [a, b], seg_overlay(c_img, mask),
                          {"class": word, "class_id": cid, "source": self.sources[src].image})
        clean, c_lab, c_ir = random_crop(img, lab, ir, self.size, rng)
        info = {"source": self.sources[src].image}
        if task == "control":
            kind = CONTROL_KINDS[int(rng.integers(len(CONTROL_KINDS)))]
            a, b, _ = m3_pair(clean, rng)  # the authors' layout: fuse an M3 pair and adjust
            return Sample("control", prompts.control_prompt(kind, pick_requirement(kind, rng)), [a, b],
                          control_target(clean, kind), {**info, "kind": kind})
        if task == "m3":
            both = rng.random() < self.both_prob
            a, b, blocks = m3_pair(clean, rng, both=both)
            info.update(both=both, n_blocks=len(blocks), block_size=blocks[0].size if blocks else None)
        elif task == "mef":
            a, b, more = exposure_pair(clean, rng)
            info.update(more)
        elif task == "mff":
            near = None
            if c_lab is not None and rng.random() < 0.7:
                ids = [v for v in np.unique(c_lab) if v > 0]
                if ids:
                    pick = rng.permutation(ids)[: max(1, len(ids) // 2)]
                    near = np.isin(c_lab, pick).astype(np.float32)
                    if near.mean() < 0.05 or near.mean() > 0.95:
                        near = None
            a, b, more = focus_pair(clean, rng, near)
            info.update(more)
        elif task == "ivif":
            hot = None
            if c_lab is not None:
                hot = np.isin(c_lab, [4, 5, 6, 11, 12, 16, 20, 21, 22]).astype(np.float32)  # animals, people, cars
            real = c_ir if (c_ir is not None and rng.random() < 0.6) else None
            gray_scene = rng.random() < IVIF_GRAY
            if gray_scene:  # many IVIF benchmarks (TNO) have gray visible images: gray in, gray out
                clean = np.repeat(_u8(_luma(clean))[..., None], 3, axis=2)
            a, b, target, more = ivif_pair(clean, rng, hot, real)
            info["gray_visible"] = gray_scene
            info["real_ir"] = real is not None
            info.update(more)
            instr = fusion_instruction(task, pick_requirement(task, rng))
            return Sample(task, instr, [a, b], target, info)
        else:
            raise ValueError(task)
        instr = fusion_instruction(task, pick_requirement(task, rng))
        return Sample(task, instr, [a, b], clean, info)

    def __iter__(self) -> Iterator[Sample]:
        i = 0
        while True:
            yield self.sample(i)
            i += 1


def write_jsonl(out_dir: str | os.PathLike, n: int, seed: int = 0, size: int = 256, sources=None,
                data_root=None, mix: dict | None = None, progress: Callable[[int, int], None] | None = None
                ) -> Path:
    """Materialise ``n`` samples as PNGs + ``train.jsonl`` with OmniGen's fields
    ``{"instruction", "input_images", "output_image"}`` (paths relative to ``out_dir``)."""
    from PIL import Image

    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    gen = M3Generator(sources, seed=seed, size=size, mix=mix, data_root=data_root)
    path = out / "train.jsonl"
    with open(path, "w") as f:
        for i in range(n):
            s = gen.sample(i)
            ins = []
            for k, im in enumerate(s.inputs):
                p = f"images/{i:07d}_in{k + 1}.png"
                Image.fromarray(im).save(out / p)
                ins.append(p)
            tp = f"images/{i:07d}_out.png"
            Image.fromarray(s.target).save(out / tp)
            f.write(json.dumps({"instruction": s.instruction, "input_images": ins, "output_image": tp,
                                "task": s.task}) + "\n")
            if progress:
                progress(i + 1, n)
    return path

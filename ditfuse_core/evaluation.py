"""``ditfuse eval``: run fusion methods over a benchmark's pairs, score them, write a report.

Why: one command that produces comparable numbers (stated metric conventions, DiTFuse's argument
order) for DiTFuse and the classical baselines, plus pictures to check the numbers against.

Pair discovery (``discover_pairs``) maps every layout to DiTFuse's order, image 1 / image 2 =
* IVIF  ``vi/<name>`` + ``ir/<name>``      → visible / infrared;
* MFF   ``NN_a`` (near focus) + ``NN_b`` (far focus) → ``NN_b`` / ``NN_a`` (far / near);
* MEF   ``<scene>_A`` (under) + ``<scene>_B`` (over) → ``_B`` / ``_A`` (over / under).
Metrics get (image 1, image 2, fused) on gray 0–255 (``metrics.convert.to_gray``); for IVIF this
is VIFB's own visible-first order. Outputs in ``--out``: ``metrics.csv`` (pair, method, metric,
value), ``table.md`` (means; best per column in bold, direction aware), ``contact_sheet.png``,
``bars/<metric>.png`` and the fused images under ``fused/<method>/``.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, PngImagePlugin

from . import baselines, output_files, shards
from .contact_sheet import contact_sheet
from .metrics import METRICS, compute_metrics, resolve
from .metrics.report import format_value
from .validation import UserError

TASKS = ("ivif", "mff", "mef")
IMAGE_EXT = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}


@dataclass(frozen=True)
class Pair:
    name: str
    image1: Path  # DiTFuse image 1: visible / far-focus / over-exposed
    image2: Path  # DiTFuse image 2: infrared / near-focus / under-exposed


def _images(d: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted(d.iterdir()) if p.suffix.lower() in IMAGE_EXT and p.is_file()}


def discover_pairs(task: str, root) -> list[Pair]:
    """Pairs of a benchmark folder in DiTFuse's order (see module docstring)."""
    root = Path(root)
    if task == "ivif":
        vi, ir = root / "vi", root / "ir"
        if not (vi.is_dir() and ir.is_dir()):
            raise FileNotFoundError(f"{root}: IVIF layout needs vi/ and ir/ folders with equal names")
        v, i = _images(vi), _images(ir)
        return [Pair(n, v[n], i[n]) for n in sorted(set(v) & set(i))]
    files = _images(root)
    pat, first, second = {"mff": (r"^(.*)_([ab])$", "b", "a"), "mef": (r"^(.*)_([AB])$", "B", "A")}[task]
    groups: dict[str, dict[str, Path]] = {}
    for stem, p in files.items():
        m = re.match(pat, stem)
        if m:
            groups.setdefault(m.group(1), {})[m.group(2)] = p
    pairs = [Pair(k, g[first], g[second]) for k, g in sorted(groups.items()) if first in g and second in g]
    if not pairs:
        raise FileNotFoundError(f"{root}: no {task} pairs (*_{second} + *_{first}) found")
    return pairs


def load_image(path: Path) -> np.ndarray:
    im = Image.open(path)
    im = im.convert("L") if im.mode in ("L", "I", "I;16", "F", "1") else im.convert("RGB")
    return np.asarray(im)


class _DiTFuse:
    def __init__(self, args):
        from ditfuse_core.pipeline import DiTFusePipeline  # lazy: heavy, and optional for eval

        self.pipe = DiTFusePipeline.from_pretrained(model=args.model, lora=args.lora, device=args.device,
                                                    dtype=args.dtype, weights=getattr(args, "weights", "auto"))
        self.args = args

    def __call__(self, task, img1, img2):
        to_pil = lambda x: Image.fromarray(x).convert("RGB")  # noqa: E731
        out = self.pipe.fuse(to_pil(img1), to_pil(img2), task=task, seed=self.args.seed, steps=self.args.steps,
                             instruction=getattr(self.args, "instruction", ""))
        return np.asarray(out[0].convert("RGB"))


SOURCE_KEY = "ditfuse-source"  # the PNG text chunk of a fused image that names what made it
CHUNK = 64 * 1024


def _content(path) -> str | None:
    """A digest of a model folder's (or one file's) names, sizes and contents, read in 64 samples of 64 KiB per
    large file: it tells a model rebuilt in place apart without reading 15 GB of weights, and it is the same on
    every machine that has a copy (shards on several hosts). A name that is no local path (a hub id) stands for
    itself."""
    if not path:
        return None
    root = Path(path)
    if not root.exists():
        return str(path)
    h = hashlib.sha256()
    for f in [root] if root.is_file() else sorted(f for f in root.rglob("*") if f.is_file()):
        size = f.stat().st_size
        h.update(f"{f.relative_to(root).as_posix() if f != root else f.name}\0{size}\0".encode())
        with open(f, "rb") as fh:
            if size <= 64 * CHUNK:
                h.update(fh.read())
                continue
            for i in range(64):
                fh.seek((size - CHUNK) * i // 63)
                h.update(fh.read(CHUNK))
    return h.hexdigest()


def ditfuse_source(args) -> str:
    """A digest of what makes a run's DiTFuse fusions: the model and LoRA contents and the settings. Each fused
    image carries it (a PNG text chunk) and a resumed run reuses only images that carry the current one: else a
    model rebuilt in place, or another one, would be scored with the old one's fusions."""
    from .pipeline import model_folder

    source = {"model": _content(model_folder(args.model)), "lora": _content(args.lora), "seed": args.seed,
              "steps": args.steps, "dtype": str(args.dtype), "weights": getattr(args, "weights", "auto")}
    if getattr(args, "instruction", ""):  # only when given: the standard prompt's fusions keep their digest
        source["instruction"] = args.instruction
    return hashlib.sha256(json.dumps(source, sort_keys=True).encode()).hexdigest()


def run(args) -> dict | None:
    """Handler of ``ditfuse eval`` (also callable directly with an argparse-like namespace). Under ``--shard`` or
    several launched processes each part scores its pairs; the main process of the launch gathers them and
    writes the one report (a shard writes its own, of its pairs, in --out/shard-K-of-N/; a plain run over the
    same --out afterwards reuses every shard's fused images and writes the whole report). Fused images already in ``--out/fused`` are
    reused (a resumed run only fuses what is missing; ``--overwrite`` redoes them), DiTFuse's only when the same
    model files and settings made them (`ditfuse_source`). Returns the means (None on
    the other ranks)."""
    from tqdm import tqdm

    task = args.task
    pairs = discover_pairs(task, args.pairs)
    if args.limit:
        pairs = pairs[: args.limit]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    for m in methods:
        if m != "ditfuse" and m not in baselines.METHODS:
            raise UserError(f"unknown method {m!r}; use ditfuse or one of {', '.join(baselines.METHODS)}")
    names = resolve(args.metrics, task)
    workers = shards.Workers(shards.parse_shard(getattr(args, "shard", None)), args.device)
    args.device = workers.device()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runners = {}  # the model loads when a pair first needs it (not at all on a resumed, finished run)
    # what a reusable fused image carries: DiTFuse's source digest; the baselines are fixed functions of the pair
    source = {m: ditfuse_source(args) if m == "ditfuse" else None for m in methods}
    overwrite, stale = getattr(args, "overwrite", False), 0
    mine = workers.mine(list(enumerate(pairs)))
    parts, reused = [], 0
    bar = tqdm(total=len(mine) * len(methods), desc=" ".join(f"eval {task} {workers.label()}".split()), unit="img",
               disable=args.quiet)
    for index, pair in mine:
        img1, img2 = load_image(pair.image1), load_image(pair.image2)
        rows, row_imgs = [], [img1, img2]
        for m in methods:
            bar.set_postfix_str(f"{pair.name}/{m}")
            saved = out / "fused" / m / f"{pair.name}.png"
            kept = None if overwrite or not saved.is_file() else Image.open(saved)
            if kept is not None and getattr(kept, "text", {}).get(SOURCE_KEY) != source[m]:
                kept, stale = None, stale + 1
            if kept is not None:
                fused, reused = np.asarray(kept), reused + 1
            else:
                if m == "ditfuse" and m not in runners:
                    runners[m] = _DiTFuse(args)
                fused = runners[m](task, img1, img2) if m == "ditfuse" else baselines.fuse(m, img1, img2)
                if not args.no_save_fused:
                    info = PngImagePlugin.PngInfo()
                    if source[m]:
                        info.add_text(SOURCE_KEY, source[m])
                    output_files.save_image(Image.fromarray(fused), saved, pnginfo=info)
            vals = compute_metrics(img1, img2, fused, names, task)
            rows += [(pair.name, m, k, v) for k, v in vals.items()]
            row_imgs.append(fused)
            bar.update(1)
        parts.append((index, rows, (pair.name[:10], [_thumb(x) for x in row_imgs])))
    bar.close()
    if reused and not args.quiet:
        print(f"reused {reused} fused images already in {out / 'fused'} (--overwrite recomputes them)")
    if stale and not args.quiet:
        print(f"fused {stale} images again: those in {out / 'fused'} came from another model or other settings")
    gathered = workers.gather(parts)
    if gathered is None:
        return None
    done = sorted((p for part in gathered for p in part), key=lambda p: p[0])
    if workers.shard[1] > 1:  # shards share --out/fused; each writes its report apart (a plain run then merges)
        out = out / f"shard-{workers.shard[0] + 1}-of-{workers.shard[1]}"
        out.mkdir(exist_ok=True)
    rows = [r for _, rs, _ in done for r in rs]
    thumbs = [t for _, _, t in done]
    with open(out / "metrics.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["pair", "method", "metric", "value"])
        w.writerows([(p, m, k, repr(float(v))) for p, m, k, v in rows])
    means = mean_table(rows, methods, names)
    title = f"{task} — {Path(args.pairs).name}, {len(done)} pairs" + (
        f" (shard {workers.shard[0] + 1}/{workers.shard[1]})" if workers.shard[1] > 1 else "")
    table = markdown_table(means, methods, names, title=title)
    (out / "table.md").write_text(table + "\n")
    contact_sheet(thumbs, ["image 1", "image 2"] + methods, cell=SHEET_CELL).save(out / "contact_sheet.png")
    (out / "bars").mkdir(exist_ok=True)
    for n in names:
        bar_chart(n, [means[m][n] for m in methods], methods).save(out / "bars" / f"{n}.png")
    if not args.quiet:
        print(table)
        print(f"\nwrote {out}/metrics.csv, table.md, contact_sheet.png, bars/*.png")
    return means


SHEET_CELL = 128


def _thumb(x: np.ndarray) -> Image.Image:
    """The contact sheet's cell, made where the image is (what the sheet itself would make of it), so ranks
    send the main process thumbnails, not whole images."""
    im = Image.fromarray(x).convert("RGB")
    im.thumbnail((SHEET_CELL, SHEET_CELL))
    return im


def mean_table(rows, methods, names) -> dict[str, dict[str, float]]:
    acc: dict[tuple, list] = {}
    for _, m, k, v in rows:
        acc.setdefault((m, k), []).append(v)
    return {m: {k: float(np.mean(acc[(m, k)])) if (m, k) in acc else float("nan") for k in names} for m in methods}


def best_method(means, methods, name) -> str | None:
    vals = [(means[m][name], m) for m in methods if math.isfinite(means[m][name]) or means[m][name] == math.inf]
    if not vals:
        return None
    return (max if METRICS[name].higher_is_better else min)(vals)[1]


def markdown_table(means, methods, names, title: str = "") -> str:
    head = "| method | " + " | ".join(f"{n} {METRICS[n].arrow}" for n in names) + " |"
    lines = ([f"**{title}** (mean over pairs; ↑ higher is better, ↓ lower is better; best in bold)", ""]
             if title else []) + [head, "| --- |" + " ---: |" * len(names)]
    best = {n: best_method(means, methods, n) for n in names}
    for m in methods:
        cells = [f"**{format_value(means[m][n])}**" if best[n] == m else format_value(means[m][n]) for n in names]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def bar_chart(name: str, values, methods, w: int = 640, h: int = 360) -> Image.Image:
    """Mean per method as bars; the best bar (direction aware) is drawn darker."""
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    spec = METRICS[name]
    d.text((10, 8), f"{name} ({'higher' if spec.higher_is_better else 'lower'} is better) - {spec.summary}",
           fill="black")
    finite = [v for v in values if math.isfinite(v)]
    top = max([abs(v) for v in finite] + [1e-12])
    base_y, plot_h = h - 40, h - 80
    n = max(1, len(methods))
    bw = (w - 40) // n
    best = best_method({m: {name: v} for m, v in zip(methods, values)}, methods, name)
    for i, (m, v) in enumerate(zip(methods, values)):
        x0 = 20 + i * bw + bw // 6
        x1 = 20 + (i + 1) * bw - bw // 6
        bh = 0 if not math.isfinite(v) else int(plot_h * abs(v) / top)
        colour = (31, 90, 160) if m == best else (150, 180, 215)
        d.rectangle([x0, base_y - bh, x1, base_y], fill=colour)
        d.text((x0, base_y - bh - 14), format_value(v), fill="black")
        d.text((x0, base_y + 6), m[:14], fill="black")
    d.line([20, base_y, w - 20, base_y], fill="black")
    return img


WEIGHTS = ("auto", "fp32", "bf16", "fp16", "fp8")  # weight_storage.WEIGHTS (not imported: torch, at parse time)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--task", required=True, choices=TASKS)
    p.add_argument("--pairs", required=True, help="benchmark folder (vi/+ir/, NN_a/NN_b, <scene>_A/_B)")
    p.add_argument("--methods", default="gff,lp,average,max",
                   help=f"comma list of ditfuse,{','.join(baselines.METHODS)} (default: gff,lp,average,max)")
    p.add_argument("--metrics", default="default",
                   help="comma list of metric names, or default / all / fmi (default: the fast set)")
    p.add_argument("--out", required=True, help="report folder")
    p.add_argument("--limit", type=int, default=0, help="only the first N pairs (0 = all)")
    p.add_argument("--no-save-fused", action="store_true", help="do not write the fused images")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--overwrite", action="store_true", help="fuse again even where --out/fused has the image")
    p.add_argument("--shard", default=None, metavar="K/N",
                   help="score only part K of N of the pairs (job arrays); the report covers that part")
    g = p.add_argument_group("ditfuse method")
    g.add_argument("--model", default=None)
    g.add_argument("--lora", default=None)
    g.add_argument("--device", default="cpu")
    g.add_argument("--dtype", default="auto")
    g.add_argument("--weights", default="auto", choices=WEIGHTS,
                   help="storage of the transformer blocks' weights (as `ditfuse fuse --weights`); auto: as --dtype, "
                        "fp8 halves their memory against bf16")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--steps", type=int, default=None)
    g.add_argument("--instruction", default="",
                   help="the requirement sentence, as `ditfuse fuse --instruction` (default: the task's standard "
                        "prompt); e.g. an authors' preset, listed by `ditfuse --help`")


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``eval`` sub-command to the ``ditfuse`` CLI's argparse subparsers."""
    p = subparsers.add_parser("eval", help="score fusion methods on a benchmark folder and write a report",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.set_defaults(func=run)
    return p


def main(argv=None) -> int:
    """``python -m ditfuse_core.evaluation [eval] --task … --pairs … --out …`` (same options as ``ditfuse eval``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["eval"]:
        argv = argv[1:]
    parser = argparse.ArgumentParser(prog="python -m ditfuse_core.evaluation", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    run(parser.parse_args(argv))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The `ditfuse` command: fuse, control, segment, batch, demo (and eval, from evaluation.py)."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from tqdm import tqdm

from . import examples, prompts

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
INSTRUCTION_HELP = "replaces the task's standard requirement sentence (presets: ditfuse --help)"


def _model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument("--model", default=None, help="model folder (original OmniGen-v1 or diffusers layout); "
                   "default: the bundled ditfuse-tiny model")
    g.add_argument("--lora", default=None, help="LoRA folder or .safetensors (DiTFuse or diffusers naming)")
    g.add_argument("--lora-strength", type=float, default=1.0)
    g.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, mps, or auto")
    g.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                   help="auto: the model's own (ditfuse.json \"precision\"; the bundled model: fp32), else bf16 on "
                        "GPUs that support it, fp16 on other accelerators, fp32 on the CPU")
    s = p.add_argument_group("sampling (defaults: the model's own, see its ditfuse.json)")
    s.add_argument("--steps", type=int, default=None, help="0 or unset: the model's default")
    s.add_argument("--cfg", type=float, default=None, help="negative or unset: the model's default")
    s.add_argument("--img-cfg", type=float, default=None, help="negative or unset: the model's default")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--max-side", type=int, default=None, help="longest side the inputs are resized to")
    s.add_argument("--min-scale", type=float, default=None,
                   help="work at least this much enlarged, up to the position table (bundled model: 2; 0: off)")


def _load(args):
    from .pipeline import DiTFusePipeline

    return DiTFusePipeline.from_pretrained(args.model, args.lora, args.lora_strength, args.device, args.dtype)


def _open(path):
    from PIL import Image

    return Image.open(path).convert("RGB")


def _open_pair(args) -> tuple:
    """Image 1 and image 2 (None: image 1 is given as both)."""
    return _open(args.image1), (_open(args.image2) if args.image2 else None)


class _Bar:
    """tqdm bar fed by the pipeline's progress callback."""

    def __init__(self, desc: str):
        self.bar = None
        self.desc = desc

    def __call__(self, step: int, total: int) -> None:
        if self.bar is None:
            self.bar = tqdm(total=total, desc=self.desc, unit="step", file=sys.stderr)
        self.bar.n = step
        self.bar.refresh()
        if step >= total:
            self.bar.close()


def _kw(args) -> dict:
    return dict(steps=args.steps, cfg=args.cfg, img_cfg=args.img_cfg, seed=args.seed, max_side=args.max_side,
                min_scale=args.min_scale)


def _save(image, out: str) -> None:
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    image.save(out)
    print(out)


def cmd_fuse(args) -> None:
    pipe = _load(args)
    out = pipe.fuse(_open(args.image1), _open(args.image2), task=args.task, instruction=args.instruction,
                    progress=_Bar("fuse"), **_kw(args))
    _save(out[0], args.output)


def cmd_control(args) -> None:
    pipe = _load(args)
    out = pipe.control(*_open_pair(args), adjustment=args.adjustment, instruction=args.instruction,
                       progress=_Bar("control"), **_kw(args))
    _save(out[0], args.output)


def cmd_segment(args) -> None:
    from PIL import Image

    pipe = _load(args)
    overlay, mask = pipe.segment(*_open_pair(args), class_name=getattr(args, "class"),
                                 instruction=args.instruction, progress=_Bar("segment"), **_kw(args))
    _save(overlay[0], args.output)
    if args.mask:
        _save(Image.fromarray((mask[0].numpy() * 255).astype("uint8")), args.mask)


def _pairs(folder: Path):
    d1, d2 = folder / "image1", folder / "image2"
    if not d1.is_dir() or not d2.is_dir():
        raise SystemExit(f"{folder} needs sub-folders image1/ and image2/ with the same file names")
    names = sorted(p.name for p in d1.iterdir() if p.suffix.lower() in IMAGE_EXTS)
    missing = [n for n in names if not (d2 / n).is_file()]
    if missing:
        raise SystemExit(f"no image2/ partner for: {', '.join(missing[:5])}")
    return [(d1 / n, d2 / n) for n in names]


def cmd_batch(args) -> None:
    pipe = _load(args)
    out_dir = Path(args.output)
    for a, b in tqdm(_pairs(Path(args.folder)), desc="pairs", unit="pair", file=sys.stderr):
        img = pipe.fuse(_open(a), _open(b), task=args.task, instruction=args.instruction, **_kw(args))[0]
        _save(img, str(out_dir / (a.stem + ".png")))


def cmd_demo(args) -> None:
    """Fuse every bundled example pair with the default model and write a contact sheet."""
    from .contact_sheet import contact_sheet

    pipe = _load(args)
    out_dir = Path(args.out)
    rows = []
    for task, pair in examples.pairs().items():
        i1, i2 = (_open(p) for p in examples.pair_paths(task))
        fused = pipe.fuse(i1, i2, task=task, instruction=pair.get("instruction", ""), progress=_Bar(task),
                          **_kw(args))[0]
        _save(fused, str(out_dir / f"{task}_fused.png"))
        rows.append((task.upper(), [i1, i2, fused]))
    sheet = contact_sheet(rows, ["image 1", "image 2", f"DiTFuse ({pipe.name})"])
    _save(sheet, str(out_dir / "contact_sheet.png"))


def _pair_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("image1", help="visible / far-focus / over-exposed image")
    p.add_argument("image2", nargs="?", default=None,
                   help="infrared / near-focus / under-exposed image (omitted: image 1 is given as both)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ditfuse", description="Instruction-driven image fusion with DiTFuse.",
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="instruction presets (empty --instruction: the task's standard prompt):\n"
                                       + prompts.presets_text())
    sub = p.add_subparsers(dest="command", required=True)

    f = sub.add_parser("fuse", help="fuse two images")
    f.add_argument("image1", help="visible / far-focus / over-exposed image")
    f.add_argument("image2", help="infrared / near-focus / under-exposed image")
    f.add_argument("--task", default="ivif", choices=prompts.FUSION_TASKS)
    f.add_argument("--instruction", default="", help=INSTRUCTION_HELP)
    f.add_argument("-o", "--output", required=True)
    _model_args(f)
    f.set_defaults(func=cmd_fuse)

    c = sub.add_parser("control", help="fuse a pair and adjust brightness / contrast (one image: refine it)")
    _pair_args(c)
    c.add_argument("--adjustment", default="LIGHT+", choices=prompts.ADJUSTMENTS)
    c.add_argument("--instruction", default="", help="replaces the standard requirement sentence")
    c.add_argument("-o", "--output", required=True)
    _model_args(c)
    c.set_defaults(func=cmd_control)

    s = sub.add_parser("segment", help="fuse a pair and overlay a class in blue (+ mask); one image: segment it")
    _pair_args(s)
    s.add_argument("--class", required=True, help="class name, e.g. person")
    s.add_argument("--instruction", default="")
    s.add_argument("-o", "--output", required=True)
    s.add_argument("--mask", default=None, help="also write the mask PNG here")
    _model_args(s)
    s.set_defaults(func=cmd_segment)

    b = sub.add_parser("batch", help="fuse DIR/image1/X with DIR/image2/X for every X")
    b.add_argument("folder")
    b.add_argument("--task", default="ivif", choices=prompts.FUSION_TASKS)
    b.add_argument("--instruction", default="", help=INSTRUCTION_HELP)
    b.add_argument("-o", "--output", required=True, help="output folder")
    _model_args(b)
    b.set_defaults(func=cmd_batch)

    d = sub.add_parser("demo", help="fuse the bundled example pairs; writes PNGs and a contact sheet")
    d.add_argument("--out", default="out/demo")
    _model_args(d)
    d.set_defaults(func=cmd_demo)

    try:
        from . import evaluation
    except ImportError:
        evaluation = None
    if evaluation is not None and hasattr(evaluation, "register"):
        evaluation.register(sub)
    return p


def main(argv=None) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = build_parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()

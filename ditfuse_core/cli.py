"""The `ditfuse` command: fuse, control, segment, batch, demo (and eval, from evaluation.py)."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from tqdm import tqdm

from . import examples, output_files, prompts, shards, validation

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
    g.add_argument("--weights", default="auto", choices=["auto", "fp32", "bf16", "fp16", "fp8"],
                   help="storage of the transformer blocks' weights; auto: as --dtype. fp8 halves their memory against "
                        "bf16 at a small quality cost; compute stays in --dtype")
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

    return DiTFusePipeline.from_pretrained(args.model, args.lora, args.lora_strength, args.device, args.dtype,
                                           weights=args.weights)


def _check_values(args) -> None:
    """Numbers and model paths, before any model is loaded."""
    validation.check_sampling(steps=args.steps, cfg=args.cfg, img_cfg=args.img_cfg, max_side=args.max_side,
                              min_scale=args.min_scale, lora_strength=args.lora_strength, seed=args.seed)
    if args.model and not Path(args.model).is_dir():
        raise validation.UserError(f"--model {args.model!r}: no such model folder")
    if args.lora and not Path(args.lora).exists():
        raise validation.UserError(f"--lora {args.lora!r}: no such file or folder")


def _prepare(args, outputs: dict) -> tuple[dict, dict]:
    """Everything a one-pair command needs checked before the model loads: the inputs decode, the outputs can
    be written where asked (not over an input, not over an existing file without --overwrite), the values are
    in range. Returns (images, output paths)."""
    paths = {"image 1": args.image1}
    if args.image2:
        paths["image 2"] = args.image2
    images = validation.read_images(paths)
    outs = validation.check_outputs({k: v for k, v in outputs.items() if v}, inputs=list(paths.values()),
                                    overwrite=args.overwrite)
    _check_values(args)
    return images, outs


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


def _save(image, out, overwrite: bool = True) -> None:
    output_files.save_image(image, out, overwrite=overwrite)
    print(out)


def cmd_fuse(args) -> int:
    images, outs = _prepare(args, {"-o": args.output})
    pipe = _load(args)
    out = pipe.fuse(images["image 1"], images["image 2"], task=args.task, instruction=args.instruction,
                    progress=_Bar("fuse"), **_kw(args))
    _save(out[0], outs["-o"], args.overwrite)
    return 0


def cmd_control(args) -> int:
    images, outs = _prepare(args, {"-o": args.output})
    pipe = _load(args)
    out = pipe.control(images["image 1"], images.get("image 2"), adjustment=args.adjustment,
                       instruction=args.instruction, progress=_Bar("control"), **_kw(args))
    _save(out[0], outs["-o"], args.overwrite)
    return 0


def cmd_segment(args) -> int:
    from PIL import Image

    if not getattr(args, "class").strip():
        raise validation.UserError("--class needs a class name, e.g. person")
    images, outs = _prepare(args, {"-o": args.output, "--mask": args.mask})
    pipe = _load(args)
    overlay, mask = pipe.segment(images["image 1"], images.get("image 2"), class_name=getattr(args, "class"),
                                 instruction=args.instruction, progress=_Bar("segment"), **_kw(args))
    _save(overlay[0], outs["-o"], args.overwrite)
    if "--mask" in outs:
        _save(Image.fromarray((mask[0].numpy() * 255).astype("uint8")), outs["--mask"], args.overwrite)
    return 0


def _pairs(folder: Path) -> list[tuple[Path, Path]]:
    d1, d2 = folder / "image1", folder / "image2"
    if not d1.is_dir() or not d2.is_dir():
        raise validation.UserError(f"{folder} needs sub-folders image1/ and image2/ with the same file names")
    names = sorted(p.name for p in d1.iterdir() if p.suffix.lower() in IMAGE_EXTS and p.is_file())
    missing = [n for n in names if not (d2 / n).is_file()]
    if missing:
        raise validation.UserError(f"no image2/ partner for: {', '.join(missing[:5])}"
                                   + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
    if not names:
        raise validation.UserError(f"no images in {d1} (extensions: {' '.join(sorted(IMAGE_EXTS))})")
    return [(d1 / n, d2 / n) for n in names]


def output_names(inputs: list[Path]) -> list[str]:
    """One distinct PNG name per input: its stem, or (when stems collide, as y.png and y.jpg do) its whole name
    with the dot replaced; a number is added if even that is taken. Deterministic for a given listing, so a
    re-run finds the same names (resume)."""
    stems = [p.stem.casefold() for p in inputs]
    used, out = set(), []
    for p in inputs:
        base = p.stem if stems.count(p.stem.casefold()) == 1 else p.name.replace(".", "_")
        name, k = base, 2
        while name.casefold() in used:
            name, k = f"{base}_{k}", k + 1
        used.add(name.casefold())
        out.append(name + ".png")
    return out


def cmd_batch(args) -> int:
    """Every pair of the folder, or this process's part of them (--shard K/N, or the ranks of accelerate launch /
    torchrun): outputs already there are skipped, so a re-run after a crash does only what is missing."""
    folder, out_dir = Path(args.folder), Path(args.output)
    pairs = _pairs(folder)
    for d in (folder / "image1", folder / "image2"):
        if out_dir.resolve() == d.resolve():
            raise validation.UserError(f"-o {args.output!r} is an input folder; choose another output folder")
    if out_dir.exists() and not out_dir.is_dir():
        raise validation.UserError(f"-o {args.output!r} is a file; batch writes into a folder")
    validation.check_writable_folder(out_dir, "-o")
    _check_values(args)
    workers = shards.Workers(shards.parse_shard(args.shard), args.device)
    args.device = workers.device()
    # names from the whole listing, so every part and every re-run agrees on them
    jobs = workers.mine([(a, b, out_dir / n) for (a, b), n in zip(pairs, output_names([a for a, _ in pairs]))])
    todo = [j for j in jobs if args.overwrite or not j[2].exists()]
    skipped, failed, done = len(jobs) - len(todo), [], 0
    good = []
    for a, b, out in todo:  # a pair that does not decode is reported and left out, before the model loads
        try:
            validation.read_images({"image 1": a, "image 2": b})
            good.append((a, b, out))
        except validation.UserError as e:
            failed.append(a.name)
            print(f"ditfuse: skipped {a.name}: {e}", file=sys.stderr)
    label = workers.label()
    try:
        if good:
            pipe = _load(args)
            for a, b, out in tqdm(good, desc=" ".join(f"pairs {label}".split()), unit="pair", file=sys.stderr,
                                  position=workers.rank):
                try:
                    images = validation.read_images({"image 1": a, "image 2": b})
                    img = pipe.fuse(images["image 1"], images["image 2"], task=args.task,
                                    instruction=args.instruction, **_kw(args))[0]
                except (ValueError, FloatingPointError) as e:
                    failed.append(a.name)
                    print(f"ditfuse: failed {a.name}: {e}", file=sys.stderr)
                    continue
                output_files.remove_partials(out)
                output_files.save_image(img, out)
                done += 1
    finally:
        print(f"ditfuse batch{' (' + label + ')' if label else ''}: {done} written, {skipped} already there "
              f"(skipped), {len(failed)} failed, {len(jobs) - done - skipped - len(failed)} not done; outputs in "
              f"{out_dir}", file=sys.stderr)
    return 1 if failed else 0


def cmd_demo(args) -> int:
    """Fuse every bundled example pair with the default model and write a contact sheet (replacing an earlier
    demo's files in --out)."""
    from .contact_sheet import contact_sheet

    _check_values(args)
    validation.check_writable_folder(Path(args.out), "--out")
    pipe = _load(args)
    out_dir = Path(args.out)
    rows = []
    for task, pair in examples.pairs().items():
        i1, i2 = validation.read_images(dict(zip(("image 1", "image 2"), examples.pair_paths(task)))).values()
        fused = pipe.fuse(i1, i2, task=task, instruction=pair.get("instruction", ""), progress=_Bar(task),
                          **_kw(args))[0]
        _save(fused, out_dir / f"{task}_fused.png")
        rows.append((task.upper(), [i1, i2, fused]))
    sheet = contact_sheet(rows, ["image 1", "image 2", f"DiTFuse ({pipe.name})"])
    _save(sheet, out_dir / "contact_sheet.png")
    return 0


def _pair_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("image1", help="visible / far-focus / over-exposed image")
    p.add_argument("image2", nargs="?", default=None,
                   help="infrared / near-focus / under-exposed image (omitted: image 1 is given as both)")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    p = argparse.ArgumentParser(prog="ditfuse", description="Instruction-driven image fusion with DiTFuse.",
                                formatter_class=argparse.RawDescriptionHelpFormatter, parents=[common],
                                epilog="instruction presets (empty --instruction: the task's standard prompt):\n"
                                       + prompts.presets_text())
    sub = p.add_subparsers(dest="command", required=True)
    overwrite = dict(action="store_true", help="replace existing output files (default: refuse)")

    f = sub.add_parser("fuse", help="fuse two images", parents=[common])
    f.add_argument("image1", help="visible / far-focus / over-exposed image")
    f.add_argument("image2", help="infrared / near-focus / under-exposed image (resized to image 1's size)")
    f.add_argument("--task", default="ivif", choices=prompts.FUSION_TASKS)
    f.add_argument("--instruction", default="", help=INSTRUCTION_HELP)
    f.add_argument("-o", "--output", required=True)
    f.add_argument("--overwrite", **overwrite)
    _model_args(f)
    f.set_defaults(func=cmd_fuse)

    c = sub.add_parser("control", help="fuse a pair and adjust brightness / contrast (one image: refine it)",
                       parents=[common])
    _pair_args(c)
    c.add_argument("--adjustment", default="LIGHT+", choices=prompts.ADJUSTMENTS)
    c.add_argument("--instruction", default="", help="replaces the standard requirement sentence")
    c.add_argument("-o", "--output", required=True)
    c.add_argument("--overwrite", **overwrite)
    _model_args(c)
    c.set_defaults(func=cmd_control)

    s = sub.add_parser("segment", help="fuse a pair and overlay a class in blue (+ mask); one image: segment it",
                       parents=[common])
    _pair_args(s)
    s.add_argument("--class", required=True, help="class name, e.g. person")
    s.add_argument("--instruction", default="")
    s.add_argument("-o", "--output", required=True)
    s.add_argument("--mask", default=None, help="also write the mask PNG here")
    s.add_argument("--overwrite", **overwrite)
    _model_args(s)
    s.set_defaults(func=cmd_segment)

    b = sub.add_parser("batch", help="fuse DIR/image1/X with DIR/image2/X for every X (resumes: outputs already "
                                     "there are skipped)", parents=[common])
    b.add_argument("folder")
    b.add_argument("--task", default="ivif", choices=prompts.FUSION_TASKS)
    b.add_argument("--instruction", default="", help=INSTRUCTION_HELP)
    b.add_argument("-o", "--output", required=True, help="output folder (one PNG per pair, named by its stem)")
    b.add_argument("--overwrite", action="store_true", help="redo pairs whose output exists (default: skip them)")
    b.add_argument("--shard", default=None, metavar="K/N",
                   help="do only part K of N of the pairs (pair i belongs to part i mod N + 1), for job arrays; "
                        "under accelerate launch / torchrun the processes split the pairs by themselves")
    _model_args(b)
    b.set_defaults(func=cmd_batch)

    d = sub.add_parser("demo", help="fuse the bundled example pairs; writes PNGs and a contact sheet",
                       parents=[common])
    d.add_argument("--out", default="out/demo")
    _model_args(d)
    d.set_defaults(func=cmd_demo)

    try:
        from . import evaluation
    except ImportError:
        evaluation = None
    if evaluation is not None and hasattr(evaluation, "register"):
        evaluation.register(sub).add_argument("--debug", action="store_true", help="show the full traceback")
    from . import download

    download.register(sub).add_argument("--debug", action="store_true", help="show the full traceback")
    return p


class _WarningFormatter(logging.Formatter):
    def format(self, record):
        return f"ditfuse: {record.levelname.lower()}: {record.getMessage()}"


# Problems with what was asked for: one line, exit 2. Others that are not bugs: one line, exit 1.
USER_ERRORS = (ValueError, KeyError, FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError,
               FileExistsError)


def _message(e: BaseException) -> str:
    return str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)


def main(argv=None) -> int:
    """Runs a command; user errors end in one line `ditfuse: error: …` and exit code 2 (--debug: traceback),
    Ctrl-C in exit code 130 with nothing half-written."""
    import torch

    argv = sys.argv[1:] if argv is None else list(argv)
    if [a for a in argv if not a.startswith("-")][:1] != ["download"]:  # the one command that goes online
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_WarningFormatter())
    logging.getLogger("ditfuse_core").addHandler(handler)
    args = build_parser().parse_args(argv)
    try:
        rc = args.func(args)
        return rc if isinstance(rc, int) else 0  # eval returns its means
    except KeyboardInterrupt:
        if args.debug:
            raise
        print("ditfuse: interrupted (no partial files were left; batch resumes where it stopped)", file=sys.stderr)
        return 130
    except (*USER_ERRORS, FloatingPointError, torch.OutOfMemoryError, OSError) as e:
        if args.debug:
            raise
        print(f"ditfuse: error: {_message(e)}", file=sys.stderr)
        return 2 if isinstance(e, USER_ERRORS) else 1
    finally:
        logging.getLogger("ditfuse_core").removeHandler(handler)


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Build the bundled default model "ditfuse-tiny": autoencoder first, then the transformer (constructed or trained).

    # 1. once, on a machine that has shared/data (writes .devdata/pack, ~37 MB, git-ignored; step 2 does
    #    this itself when the pack is missing)
    python -m scripts.make_train_pack
    # 2. GPU (≤ 10 min):
    python -m tools.build_default_model --vae-minutes 3 --dit-minutes 6 --out out/ditfuse-tiny
    # 2'. the bundled model (2-core CPU, ~2 min; MODEL_CARD.md says why these options):
    python -m tools.build_default_model --vae-kind linear --eval-vae --average-init --detail 8,0.1 \
        --layers 1 --intermediate 64 --dit-minutes 0 --device cpu --out out/ditfuse-tiny

Writes OUT/ (diffusers layout): transformer/{config.json, diffusion_pytorch_model.safetensors (fp16)},
vae/{config.json, diffusion_pytorch_model.safetensors}, ditfuse.json (sampling defaults + training record),
MODEL_CARD.md, and OUT/work/ (logs, loss plot, checkpoints). Copy OUT (without work/) to
ditfuse_core/assets/ditfuse-tiny to bundle it. Device: cuda if available, else cpu (or --device).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

import torch

from tools.bundled import constants as recipes
from tools.bundled.recipe import trainable_transformer_config, zero_unused_embeddings

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")


PACK = ROOT / ".devdata" / "pack"


def _data_root(arg: str | None) -> str:
    """--data, else .devdata/pack — built here from shared/data on first use, so the bundled model's one
    command reproduces it from a fresh clone (the pack's resized JPEGs are what it was fitted on)."""
    if arg:
        return arg
    if not (PACK / "index.json").exists():
        from ditfuse_core.training.m3 import data_root
        from ditfuse_core.training.pack import build_pack

        shared = data_root()
        print(f"no training pack at {PACK} yet: building it from {shared} (once, about a minute)", flush=True)
        try:
            n, size = build_pack(shared, PACK)
        except FileNotFoundError:
            return str(shared)  # nothing to pack: the trainer reports the missing data
        print(f"{n} images -> {PACK} ({size / 1e6:.1f} MB)", flush=True)
    return str(PACK)


def _shown(path: str) -> str:
    """The data path as the card records it: relative to the checkout where it lies beside it, so the card
    does not carry one machine's home folder."""
    p = Path(path).resolve()
    return os.path.relpath(p, ROOT) if p.is_relative_to(ROOT.parent) else str(p)


CPU_FROM_SCRATCH = ("* from scratch on a 2-core CPU, VAE included (about 50 min; measured in docs/notes/findings.md): "
                    "`python -m tools.build_default_model --device cpu --vae-minutes 45 --average-init --detail 2,0.3 "
                    "--dit-minutes 0 --layers 1 --intermediate 64` (the bundled VAE then also had the fine-tune of the VAE line; run it with "
                    "`--init OUT/work/vae` and pass its folder as `--vae`)")


def _size_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "out" / "ditfuse-tiny"))
    ap.add_argument("--data", default=None, help="train pack (default .devdata/pack) or shared/data")
    ap.add_argument("--vae-minutes", type=float, default=3.0)
    ap.add_argument("--dit-minutes", type=float, default=6.0, help="0 (without --dit-steps): no training, export "
                                                                   "the initialisation")
    ap.add_argument("--vae-steps", type=int, default=None, help="optional step cap for the VAE")
    ap.add_argument("--dit-steps", type=int, default=None, help="optional step cap for the transformer")
    ap.add_argument("--device", default=None, help="cuda | cpu (default: cuda if available)")
    ap.add_argument("--vae", default=None, help="reuse a trained VAE folder instead of training one")
    ap.add_argument("--vae-kind", default="kl", choices=["kl", "linear"],
                    help="kl: train a small AutoencoderKL (--vae-minutes); linear: fit the LinearAutoencoder "
                         "(principal components of pixel blocks, seconds; tools/bundled/autoencoder_fit.py)")
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--sizes", default=None, help="comma-separated crop sizes for the transformer")
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--size-probs", default=None, help="comma-separated probabilities of --sizes")
    ap.add_argument("--mix", default=None, help='task mix as JSON, e.g. \'{"m3": 0.5, "ivif": 0.5}\' (default constants.TINY_MIX)')
    ap.add_argument("--ema", type=float, default=None)
    ap.add_argument("--warmup", type=float, default=0.03, help="fraction of the budget (< 1) or steps")
    ap.add_argument("--init-transformer", default=None,
                    help="start from these transformer weights (a model folder with transformer/, or the "
                         "transformer folder itself; same architecture) instead of a random initialisation")
    ap.add_argument("--average-init", action="store_true",
                    help="start from the constructed 'average the inputs' weights (tools/bundled/average_init.py): "
                         "hidden 320, embeddings, layer 0 and read-out frozen, later layers trained")
    ap.add_argument("--detail", default=None, metavar="SIGMA,AMOUNT",
                    help="with --average-init: the flow goes to a detail-mapped average, the per-token map "
                         "fitted to unsharp masking (sigma px at the working size, amount) on training crops "
                         "(tools/bundled/detail_map.py)")
    ap.add_argument("--focus", default=None, metavar="G1,…,G6",
                    help="with --detail and --layers ≥ 2: a multi-focus filter, gains of the latent average's octave "
                         "bands (σ 0–1–2–4–8–16–32 px at the working size), fitted across tokens and switched on by "
                         "the prompt for multi-focus pairs (tools/bundled/focus_map.py)")
    ap.add_argument("--cond-dropout", type=float, default=0.1,
                    help="fraction of rows trained without instruction and images (for guidance); 0 when the model "
                         "is only ever sampled with cfg = img_cfg = 1")
    ap.add_argument("--loss-weight", default="velocity", choices=["velocity", "x1"],
                    help="x1: weight each row by (1 − t)² (the implied x1 error)")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--control", action="store_true",
                    help="with --average-init: put the prompt-gated brightness/contrast layer in front "
                         "(tools/bundled/control.py; amounts measured on the training images)")
    ap.add_argument("--selection", default=None, metavar="BETA,STRENGTH[,ivif]",
                    help="with --focus and --control: multi-focus (and with ',ivif' infrared-visible) prompts select per "
                         "token by detail energy instead of the multi-focus filter (tools/bundled/selection.py; chosen "
                         "on training pairs: 0.1,0.3,ivif)")
    ap.add_argument("--exposure", type=float, default=None, metavar="SIGMA",
                    help="with --selection: exposure prompts weigh each token by its exposure, exp(−(L − 0.5)²/2σ²) "
                         "(tools/bundled/exposure.py; chosen on synthetic training pairs: 0.2)")
    ap.add_argument("--neighbourhood", type=int, default=None, metavar="SIGMA",
                    help="with --exposure: the selection's detail is taken against each token's neighbourhood, smoothed "
                         "by a Gaussian of SIGMA working px (tools/bundled/neighbourhood.py; chosen on training pairs: 16)")
    ap.add_argument("--focus-energy", type=float, default=None, metavar="GAIN",
                    help="with --exposure: multi-focus prompts measure activity on the tokens' fine detail, GAIN times "
                         "(tools/bundled/focus_energy.py; chosen on training pairs: 2)")
    ap.add_argument("--warm-targets", type=float, default=None, metavar="GAMMA",
                    help="with --neighbourhood: the word 'warm' in a prompt raises warm targets to image 2's brightness "
                         "(tools/bundled/warm.py; chosen on training pairs: 20)")
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--intermediate", type=int, default=768)
    ap.add_argument("--vae-latent", type=int, default=recipes.TINY_VAE["latent"])
    ap.add_argument("--vae-f", type=int, default=recipes.TINY_VAE["f"])
    ap.add_argument("--steps-default", type=int, default=None,
                    help=f"sampling steps written to ditfuse.json (default {recipes.TINY_DEFAULTS['steps']}; "
                         f"{recipes.CONSTRUCTED_STEPS} for an untrained construction, whose flow is straight)")
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--resume", action="store_true", help="resume the transformer from OUT/work/dit checkpoints")
    ap.add_argument("--eval-vae", action="store_true", help="VAE PSNR on shared/data/eval (if present)")
    ap.add_argument("--work", default=None, help="logs/checkpoints folder (default OUT/work)")
    ap.add_argument("--transfer-dir", default=None,
                    help="also write OUT as model.tar.gz split into <= 15 MB parts here (for copying back)")
    a = ap.parse_args(argv)

    from ditfuse_core.training.flow import FlowTrainer, TrainConfig
    from ditfuse_core.training.vae_trainer import train_vae
    from ditfuse_core.vae import downsample_factor

    device = a.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if a.threads:
        torch.set_num_threads(a.threads)
    kind = recipes.GPU if device.startswith("cuda") else recipes.CPU
    if device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if (a.neighbourhood or a.focus_energy) and not a.exposure:
        ap.error("--neighbourhood and --focus-energy go in after the selection and the exposure weighting: use them "
                 "with --exposure")
    if a.warm_targets and not a.neighbourhood:
        ap.error("--warm-targets uses the neighbourhood layer's free heads: use it with --neighbourhood")
    if a.exposure and not a.selection:
        ap.error("--exposure rides on the selection: use it with --selection")
    if a.selection and not (a.focus and a.control):
        ap.error("--selection rewrites the multi-focus layers: use it with --focus and --control")
    if a.control and not a.average_init:
        ap.error("--control adds a layer to the constructed transformer: use it with --average-init")
    if a.detail and not a.average_init:
        ap.error("--detail shapes the constructed transformer: use it with --average-init")
    if a.focus and not (a.detail and a.layers >= 2):
        ap.error("--focus adds to the detail map in a second layer: use it with --detail and --layers 2 or more")
    data = _data_root(a.data)
    out = Path(a.out)
    work = Path(a.work) if a.work else out / "work"
    work.mkdir(parents=True, exist_ok=True)
    t_all = time.time()
    dev_name = torch.cuda.get_device_name(0) if device.startswith("cuda") else f"CPU ({os.cpu_count()} cores, {platform.processor() or platform.machine()})"
    print(f"device {device} [{dev_name}], data {data}", flush=True)

    # ---- 1. VAE ------------------------------------------------------------------------------------
    if a.vae:
        vae_dir = Path(a.vae)
        vae_summary = json.loads((vae_dir / "train_log.json").read_text()) if (vae_dir / "train_log.json").exists() else {}
        print(f"reusing VAE {vae_dir}")
    elif a.vae_kind == "linear":
        from ditfuse_core.training import m3
        from tools.bundled.autoencoder_fit import fit_and_save

        vae_dir = work / "vae"
        print("== linear autoencoder (principal components of pixel blocks)", flush=True)
        vae_summary = fit_and_save(vae_dir, m3.scan_sources(data), 1 if a.eval_vae else 0, factor=a.vae_f,
                                   latent_channels=a.vae_latent, seed=a.seed)
        print(json.dumps(vae_summary), flush=True)
    else:
        vae_dir = work / "vae"
        print(f"== VAE: {a.vae_minutes} min", flush=True)
        vae_summary = train_vae(str(vae_dir), minutes=a.vae_minutes, steps=a.vae_steps, batch=kind["vae_batch"],
                                size=kind["vae_size"], lr=kind["vae_lr"], f=a.vae_f, latent=a.vae_latent,
                                base=recipes.TINY_VAE["base"], max_ch=recipes.TINY_VAE["max_ch"], device=device,
                                seed=a.seed, data_root=data, workers=a.workers,
                                log_every=100 if device.startswith("cuda") else 25,
                                eval_stride=1 if a.eval_vae else 0)
        print(json.dumps({k: v for k, v in vae_summary.items() if k != "log"}), flush=True)
    from ditfuse_core.vae import load_vae

    vae = load_vae(vae_dir, torch.float32, "cpu")
    f = downsample_factor(vae)

    # ---- 2. transformer ------------------------------------------------------------------------------
    if a.average_init:
        from tools.bundled import average_init

        init = average_init.config(latent_channels=vae.config.latent_channels, patch_size=16 // f,
                                   layers=a.layers, intermediate=a.intermediate)
    else:
        init = trainable_transformer_config(latent_channels=vae.config.latent_channels, vae_factor=f,
                                               hidden=a.hidden, layers=a.layers, intermediate=a.intermediate)
    sizes = [int(s) for s in a.sizes.split(",")] if a.sizes else kind["sizes"]
    mix = json.loads(a.mix) if a.mix else recipes.TINY_MIX
    size_probs = ([float(x) for x in a.size_probs.split(",")] if a.size_probs
                  else None if a.sizes else kind["size_probs"])
    cfg = TrainConfig(out=str(work / "dit"), init_config=init, data=data, mix=mix, sizes=sizes,
                      size_probs=size_probs, batch=a.batch or kind["batch"],
                      lr=a.lr or kind["lr"], warmup=a.warmup if a.warmup < 1 else int(a.warmup),
                      max_steps=a.dit_steps, minutes=a.dit_minutes,
                      ema=kind["ema"] if a.ema is None else a.ema, cond_dropout=a.cond_dropout, loss_weight=a.loss_weight, seed=a.seed, workers=a.workers, device=device,
                      save_every=500 if device.startswith("cuda") else 200, log_every=20 if device.startswith("cuda") else 5,
                      resume="latest" if a.resume else None,
                      freeze=list(average_init.frozen(bool(a.focus))) if a.average_init else [])
    print(f"== transformer: {a.dit_minutes} min, batch {cfg.batch}, sizes {sizes}", flush=True)
    from ditfuse_core.tokenizer import load_tokenizer
    from ditfuse_core.transformer import DiTFuseTransformer

    torch.manual_seed(a.seed)
    model = DiTFuseTransformer(**init)
    latent_map = None
    if a.init_transformer:
        src = Path(a.init_transformer)
        src = src / "transformer" if (src / "transformer").is_dir() else src
        base = DiTFuseTransformer.from_pretrained(str(src), torch_dtype=torch.float32)
        model.load_state_dict(base.state_dict(), strict=True)
        print(f"initialised the transformer from {src}", flush=True)
        del base
    elif a.average_init:
        if a.detail:
            from ditfuse_core.training import m3
            from tools.bundled.detail_map import fit_detail_map

            sigma, amount = (float(x) for x in a.detail.split(","))
            latent_map, detail_rec = fit_detail_map(vae, m3.scan_sources(data), sigma=sigma, amount=amount,
                                                    patch=init["patch_size"], seed=a.seed)
            print(f"detail map fitted: {detail_rec}", flush=True)
        focus = None
        if a.focus:
            from tools.bundled import focus_map

            focus, focus_rec = focus_map.fit_focus_map(vae, m3.scan_sources(data), [float(x) for x in a.focus.split(",")],
                                                       latent_map, patch=init["patch_size"], seed=a.seed)
            focus["gate_ids"] = focus_rec["gate_ids"] = focus_map.gate_token_ids(load_tokenizer())
            print(f"multi-focus filter fitted: {focus_rec}", flush=True)
        average_init.init_average(model, seed=a.seed, latent_map=latent_map, focus=focus)
        print("constructed 'average the inputs' initialisation; frozen: " + ", ".join(average_init.frozen(bool(a.focus))),
              flush=True)
    tok = load_tokenizer()
    kept = zero_unused_embeddings(model, tok)
    print(f"token embeddings: {kept} rows used by the training instructions, the rest zero", flush=True)
    tr = FlowTrainer(cfg, transformer=model, vae=vae, tokenizer=tok)
    n_params = sum(p.numel() for p in tr.transformer.parameters())
    print(f"transformer params {n_params / 1e6:.2f} M", flush=True)
    construct_only = a.dit_minutes <= 0 and not a.dit_steps
    if construct_only:  # --dit-minutes 0: export the initialisation itself (e.g. the constructed averaging model)
        dit_summary = {"steps": 0, "wall_s": 0.0, "trainable_params": tr.n_trainable, "device": device,
                       "note": "not trained: exported as initialised"}
    else:
        dit_summary = tr.fit()
    if latent_map is not None:
        dit_summary["detail_map"] = detail_rec
    if a.focus:
        dit_summary["focus_map"] = focus_rec
    print(json.dumps(dit_summary), flush=True)
    # export the EMA weights unless the raw ones do better on held-out batches (short runs)
    use_ema = False
    if tr.ema is not None and not construct_only:
        raw, ema = tr.val_loss(use_ema=False), tr.val_loss(use_ema=True)
        use_ema = ema <= raw
        dit_summary.update(val_loss_raw=raw, val_loss_ema=ema, exported="ema" if use_ema else "raw")
        print(f"held-out loss: raw {raw:.4f}, EMA {ema:.4f} -> export {'EMA' if use_ema else 'raw'}", flush=True)

    # ---- 3. model folder -----------------------------------------------------------------------------
    for sub in ("transformer", "vae"):
        shutil.rmtree(out / sub, ignore_errors=True)
    tr.export(out / "transformer", use_ema=use_ema, dtype=torch.float16)
    vae.to(torch.float32).save_pretrained(str(out / "vae"), safe_serialization=True)
    wall = time.time() - t_all
    cmd = "python -m tools.build_default_model " + " ".join(sys.argv[1:] if argv is None else argv)
    record = {
        "name": "ditfuse-tiny",
        "defaults": {**recipes.TINY_DEFAULTS, "steps": a.steps_default or (
            recipes.CONSTRUCTED_STEPS if construct_only and a.average_init else recipes.TINY_DEFAULTS["steps"])},
        **({"precision": recipes.CONSTRUCTED_PRECISION} if a.average_init else {}),
        "training": {
            "command": cmd, "device": dev_name, "wall_minutes": round(wall / 60, 1), "data": _shown(data),
            "vae": {k: v for k, v in vae_summary.items() if k != "log"},
            "transformer": {**dit_summary, "params": n_params, "batch": cfg.batch, "sizes": sizes,
                            "init": "average" if a.average_init else "random",
                            "lr": cfg.lr, "ema": cfg.ema, "mix": cfg.mix, "config": init},
            "torch": torch.__version__,
        },
    }
    (out / "ditfuse.json").write_text(json.dumps(record, indent=1))
    dit_log = []
    if (work / "dit" / "loss_log.jsonl").exists():
        dit_log = [json.loads(x) for x in (work / "dit" / "loss_log.jsonl").read_text().splitlines() if x.strip()]
    (out / "training_log.json").write_text(json.dumps({"vae": vae_summary.get("log", []), "transformer": dit_log}))
    if (work / "dit" / "loss.png").exists():
        shutil.copy(work / "dit" / "loss.png", work / "transformer_loss.png")
    if a.control:
        from tools.bundled import control

        control.main([str(out)])
        if a.selection:
            from tools.bundled import selection

            beta, strength, *tasks = a.selection.split(",")
            selection.main([str(out), "--beta", beta, "--strength", strength, *(["--ivif"] if "ivif" in tasks else [])])
        if a.exposure:
            from tools.bundled import exposure

            exposure.main([str(out), "--sigma", str(a.exposure)])
        if a.neighbourhood:
            from tools.bundled import neighbourhood

            neighbourhood.main([str(out), "--sigma", str(a.neighbourhood), "--data", data])
        if a.focus_energy:
            from tools.bundled import focus_energy

            focus_energy.main([str(out), "--gain", str(a.focus_energy)])
        if a.warm_targets:
            from tools.bundled import warm

            warm.main([str(out), "--gamma", str(a.warm_targets)])
        record = json.loads((out / "ditfuse.json").read_text())
    write_card(out, record)
    size = _size_mb(out / "transformer") + _size_mb(out / "vae")
    if a.transfer_dir:
        split_archive(out, Path(a.transfer_dir))
    print(json.dumps({"out": str(out), "model_mb": round(size, 1), "wall_minutes": round(wall / 60, 1),
                      "vae_steps": vae_summary.get("steps"), "vae_eval_psnr": vae_summary.get("eval_psnr", {}).get("mean"),
                      "dit_steps": dit_summary["steps"], "final_loss": _last_loss(work / "dit" / "loss_log.jsonl")},
                     indent=1), flush=True)


def split_archive(out: Path, dest: Path, part_mb: int = 15) -> None:
    """OUT (without work/) as model.tar.gz in <= part_mb MB pieces; join with `cat model.tar.gz.part* > x`."""
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for p in sorted(out.rglob("*")):
            if p.is_file() and "work" not in p.relative_to(out).parts:
                tar.add(p, arcname=str(Path(out.name) / p.relative_to(out)))
    data = buf.getvalue()
    dest.mkdir(parents=True, exist_ok=True)
    n = part_mb * 1024 * 1024
    for i in range(0, len(data), n):
        (dest / f"model.tar.gz.part{i // n:02d}").write_bytes(data[i:i + n])
    print(f"archive {len(data) / 1e6:.1f} MB in {(len(data) + n - 1) // n} parts -> {dest}", flush=True)


def _selection_text(c: dict) -> list[str]:
    ivif = "ivif" in c.get("tasks", ["mff"])
    return [f"For multi-focus{' and infrared-visible' if ivif else ''} prompts the model selects "
            "(`tools/bundled/selection.py`): each output token takes the",
            "two input tokens at its position with softmax weights of β·(detail energy) and adds",
            f"s·(weighted − average) of their within-token detail to the detail-mapped average (β {c['beta']}, s "
            f"{c['strength']}, chosen on {c['chosen_on']}"
            + (f"; infrared-visible on {c['ivif_chosen_on']}" if ivif else "") + "); the other prompts' gate tokens",
            "(subtags, control/segmentation tags) switch it off (equal weights: the average). It replaced the",
            "multi-focus filter of the average."]


def _exposure_text(c: dict) -> list[str]:
    return ["For exposure prompts (`tools/bundled/exposure.py`) the same selection weighs each token by its exposure",
            f"instead: softmax weights of −(L − {c['centre']})²/(2σ²), L the token's mean luminance (σ {c['sigma']}, chosen",
            f"on {c['chosen_on']})."]


def _neighbourhood_text(c: dict) -> list[str]:
    return ["The detail the selection chooses is each token minus its neighbourhood's base (`tools/bundled/neighbourhood.py`:",
            "a layer after the control layer gives each input token the kernel mean of its neighbourhood; the base is the",
            f"latent of a Gaussian of {c['sigma_px']} working px, fitted on training crops; σ chosen on {c['chosen_on']})."]


def _focus_energy_text(c: dict) -> list[str]:
    return [f"On multi-focus prompts the selection's activity is the detail energy without each token's planar trend, "
            f"×{c['gain']} (`tools/bundled/focus_energy.py`: a blurred edge's ramp is no activity; chosen on "
            f"{c['chosen_on']})."]


def _warm_text(c: dict) -> list[str]:
    return ["With the word \"warm\" in the prompt (the authors' IVIF preset \"Keep the warm targets of the infrared image",
            "bright …\") each output latent pixel where image 2's smooth luminance is above image 1's is raised by half the",
            f"difference, to image 2's brightness over the fusion's texture (`tools/bundled/warm.py`, soft max with γ {c['gamma']:g},",
            f"chosen on {c['chosen_on']}). Other prompts are unchanged (within 1 level of 255, mean 0.03)."]


def _control_text(c: dict) -> list[str]:
    a = c["amounts"]
    return ["A layer in front (`tools/bundled/control.py`) reads a `[CONTROL]` prompt's subtag: it adds a brightness",
            f"offset to both inputs before they are fused (0..1 units: LIGHT++ {a['LIGHT++']:+}, LIGHT+ {a['LIGHT+']:+}, "
            f"LIGHT- {a['LIGHT-']:+}, LIGHT-- {a['LIGHT--']:+}: the mean-luminance change of the training targets' gamma",
            f"curves on {c['measured_on']}) or scales their contrast about mid grey (CONTRAST+ ×{a['CONTRAST+']},",
            f"CONTRAST- ×{a['CONTRAST-']}, the training targets' gains; the three principal latent channels). Without a",
            "control subtag it adds exactly nothing (fusions are bit-identical with and without it). Segmentation needs",
            "the real DiTFuse weights."]


def _last_loss(path: Path):
    if not path.exists():
        return None
    lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    return lines[-1]["loss"] if lines else None


def _vae_line(v: dict) -> str:
    """The card's VAE line; a fine-tuned VAE (`training.vae --init`) also names what it started from."""
    if v.get("kind", "").startswith("linear"):
        return (f"* autoencoder: linear, f={v.get('f')}, {v.get('latent_channels')} latent channels, {v.get('params')} "
                f"params: the leading principal components of {v.get('f')}×{v.get('f')}×3 pixel blocks "
                f"({v.get('variance_kept', 0):.4f} of their variance) of {v.get('crops')} training crops of "
                f"{v.get('crop')} px enlarged by U{tuple(v.get('upscale', (1, 1)))} (M3-degraded with probability "
                f"{v.get('p_degraded')}), {v.get('wall_s')} s on {v.get('device')}, scaling_factor "
                f"{v.get('scaling_factor')} (`tools/bundled/autoencoder_fit.py`)")
    line = (f"* VAE: f={v.get('f')}, {v.get('latent_channels')} latent channels, {v.get('params')} params, "
            f"{v.get('steps')} steps in {v.get('wall_s')} s on {v.get('device')}, batch {v.get('batch')} × {v.get('crop')} px "
            f"crops, scaling_factor {v.get('scaling_factor')}")
    if v.get("trained_by"):
        line += f" (trained by `{v['trained_by']}`)"
    if "init" in v:
        i = v["init"]
        line += (f"; fine-tuned from a VAE of {i.get('steps')} steps in {i.get('wall_s')} s on {i.get('device')}, batch "
                 f"{i.get('batch')}" + (f" (trained by `{i['trained_by']}`)" if i.get("trained_by") else "")
                 + f", by `{v.get('command')}` (bf16 autocast: {v.get('bf16_autocast')}, crops enlarged by "
                 f"U{tuple(v.get('upscale', (1, 1)))}, latent-mix loss weight {v.get('mix_weight', 0)})")
    return line


def _detail_text(rec: dict | None) -> str:
    if not rec:
        return ""
    return (f"; detail map ({'per token' if rec.get('patch', 1) > 1 else 'per latent pixel'}) fitted to unsharp "
            f"masking (σ {rec['sigma']:g} px, amount {rec['amount']:g} at the working size) on {rec['crops']} crops of {rec['size']} px enlarged {rec['upscale']:g}×, relative residual "
            f"{rec['relative_residual']}")


def _focus_text(rec: dict | None) -> str:
    if not rec:
        return ""
    return (f"; multi-focus filter (band gains {rec['gains']} over σ {rec['band_sigmas']} px at the working size, "
            f"across tokens through a {rec['rank']}-direction smoothing head) fitted on {rec['crops']} crops of "
            f"{rec['size']} px enlarged {rec['upscale']:g}×, relative residual {rec['relative_residual_of_filter']}; "
            f"off for prompts with token ids {rec['gate_ids']}")


def write_card(out: Path, rec: dict) -> None:
    tr = rec["training"]
    v, d = tr["vae"], tr["transformer"]
    constructed = d.get("init") == "average" and not d["steps"]
    linear = v.get("kind", "").startswith("linear")
    if constructed:
        intro = [*(["A small DiTFuse model: the OmniGen architecture at a small size over a linear autoencoder (f 4, 16",
                    "channels) fitted by this repository's own command on `shared/data/train`: at the working size",
                    "(inputs enlarged ≥ 2×) its round trip is nearly lossless and a latent average decodes to the pixel",
                    "average. The transformer is *constructed*,"] if linear else
                   ["A small DiTFuse model: the OmniGen architecture at a small size over a small KL VAE. The VAE is",
                    "trained by this repository's own command on `shared/data/train`; the transformer is *constructed*,"]),
                 "not trained (`tools/bundled/average_init.py`): its weights compute the straight flow to the",
                 *(["average of the two input images' latents, sharpened by a detail map: the flow goes to M·average,",
                    "M a linear map of each token's latent fitted on training crops to approximate unsharp",
                    "masking (`tools/bundled/detail_map.py`), which gives back detail contrast averaging loses."]
                   if d.get("detail_map") else
                   ["average of the two input images' latents, so a fusion is exactly the latent average, decoded."]),
                 *(["For multi-focus prompts a second layer adds a filter of the average across neighbouring tokens",
                    "(gains per octave band, fitted on training crops: `tools/bundled/focus_map.py`), which",
                    "the IVIF/MEF subtags and the control/segmentation tags switch off."]
                   if d.get("focus_map") and not d.get("selection") else []),
                 *(_selection_text(d["selection"]) if d.get("selection") else []),
                 *(_exposure_text(d["exposure"]) if d.get("exposure") else []),
                 *(_neighbourhood_text(d["neighbourhood"]) if d.get("neighbourhood") else []),
                 *(_focus_energy_text(d["focus_energy"]) if d.get("focus_energy") else []),
                 *(_warm_text(d["warm"]) if d.get("warm") else []),
                 *(_control_text(d["control"]) if d.get("control") else []),
                 "Training from this starting point is in the recipe (`--average-init` with `--dit-minutes N`); runs",
                 "of up to an hour on this 2-core CPU did not improve on it (see docs/notes/findings.md)."]
    else:
        intro = ["A small DiTFuse model (OmniGen architecture + a small KL VAE) trained from scratch by this repository's",
                 "own commands on M3 data synthesised from `shared/data/train` (MSRC-v2, BSDS500, RoadScene)."]
    tr_line = (f"* transformer: {d['params'] / 1e6:.2f} M params, hidden {d['config']['hidden_size']}, "
               f"{d['config']['num_layers']} layers, patch {d['config']['patch_size']}; "
               + ("constructed, 0 training steps" + _detail_text(d.get("detail_map")) + _focus_text(d.get("focus_map"))
                  if constructed else
                  f"{d['steps']} steps in {d['wall_s']} s, batch {d['batch']}, crop sizes {d['sizes']}, lr {d['lr']}, "
                  f"EMA {d['ema']}, bf16: {d.get('mixed_precision')}"))
    lines = [
        "# ditfuse-tiny", "", *intro, "",
        "## Making it", "",
        f"* command: `{tr['command']}` (it first builds `.devdata/pack` from `shared/data/train` when that is missing:"
        " `ditfuse_core/training/pack.py`)",
        *([CPU_FROM_SCRATCH] if constructed and not linear else []),
        f"* device: {tr['device']}; total wall time {tr['wall_minutes']} min; torch {tr['torch']}",
        f"* data: `{tr['data']}`" + ("" if constructed else f"; task mix {d['mix']}"),
        _vae_line(v),
        tr_line,
        f"* sampling defaults (ditfuse.json): {rec['defaults']}",
        *([f"* precision (ditfuse.json): {rec['precision']['dtype']} on every device with dtype auto (bf16 works, "
           "but its rounded weights move a fusion by up to 5 of 255 levels, and the warm targets need fp32 or fp16)"] if rec.get("precision") else []),
        "",
        "## Evaluation", "",
    ]
    ev = v.get("eval_psnr")
    if ev:
        lines.append(f"{'Autoencoder' if linear else 'VAE'} reconstruction PSNR on shared/data/eval (max side 512): {ev['mean']:.2f} dB "
                     + ", ".join(f"{k} {x:.2f}" for k, x in ev["by_set"].items())
                     + (f" (`{ev['how']}`)" if ev.get("how") else ""))
    else:
        lines.append("VAE reconstruction PSNR: rerun with --eval-vae (needs shared/data/eval).")
    lines += ["", "Fusion metrics: `ditfuse eval` (table in benchmarks/README.md).", ""]
    (out / "MODEL_CARD.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()

"""Trainer checkpoints (trainable weights, EMA, optimizer, step and elapsed time: `--resume` continues exactly)
and the export of a trained transformer (a diffusers folder, or a LoRA adapter folder)."""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch


def trainable_state(tr, ema: bool = False) -> dict:
    names = [n for n, p in tr.unwrapped.named_parameters() if p.requires_grad]
    src = tr.ema if (ema and tr.ema is not None) else [p.detach() for p in tr.params]
    return {n: t.detach().float().cpu().contiguous() for n, t in zip(names, src)}


def save(tr, folder: str | Path | None = None) -> Path:
    from safetensors.torch import save_file

    folder = Path(folder or tr.out / "checkpoints" / f"step_{tr.step:07d}")
    tr.acc.wait_for_everyone()
    if tr.acc.is_main_process:
        folder.mkdir(parents=True, exist_ok=True)
        save_file(trainable_state(tr), str(folder / "trainable.safetensors"))
        if tr.ema is not None:
            save_file(trainable_state(tr, ema=True), str(folder / "ema.safetensors"))
        torch.save(tr.opt.state_dict(), folder / "optimizer.pt")
        (folder / "state.json").write_text(json.dumps({"step": tr.step, "elapsed": tr.elapsed,
                                                       "config": asdict(tr.cfg)}, indent=1, default=str))
        ck = sorted((tr.out / "checkpoints").glob("step_*")) if folder.parent == tr.out / "checkpoints" else []
        for old in ck[: -tr.cfg.keep_checkpoints]:
            import shutil

            shutil.rmtree(old, ignore_errors=True)
    tr.acc.wait_for_everyone()
    return folder


def load(tr, folder: str | Path) -> None:
    from safetensors.torch import load_file

    if str(folder) == "latest":
        ck = sorted((tr.out / "checkpoints").glob("step_*"))
        if not ck:
            tr.acc.print("no checkpoint to resume from; starting fresh")
            return
        folder = ck[-1]
    folder = Path(folder)
    state = load_file(str(folder / "trainable.safetensors"))
    named = dict(tr.unwrapped.named_parameters())
    with torch.no_grad():
        for n, t in state.items():
            named[n].copy_(t.to(named[n].device, named[n].dtype))
    if tr.ema is not None and (folder / "ema.safetensors").exists():
        e = load_file(str(folder / "ema.safetensors"))
        names = [n for n, p in tr.unwrapped.named_parameters() if p.requires_grad]
        tr.ema = [e[n].to(tr.device).float() for n in names]
    tr.opt.load_state_dict(torch.load(folder / "optimizer.pt", map_location="cpu", weights_only=False))
    st = json.loads((folder / "state.json").read_text())
    tr.step, tr.elapsed = int(st["step"]), float(st["elapsed"])
    tr.acc.print(f"resumed from {folder} at step {tr.step}")


def export(tr, folder: str | Path, use_ema: bool = True, dtype=torch.float32) -> Path:
    """Write the trained transformer (full: diffusers folder; LoRA: adapter folder)."""
    folder = Path(folder)
    model = tr.unwrapped
    if tr.cfg.lora:
        from ..lora import save_lora

        if use_ema and tr.ema is not None:
            with torch.no_grad():
                backup = [p.detach().clone() for p in tr.params]
                for p, e in zip(tr.params, tr.ema):
                    p.copy_(e)
        save_lora(model, folder)
        if use_ema and tr.ema is not None:
            with torch.no_grad():
                for p, b in zip(tr.params, backup):
                    p.copy_(b)
        return folder
    import copy

    clean = copy.deepcopy(model).cpu().float()
    if use_ema and tr.ema is not None:
        named = dict(clean.named_parameters())
        names = [n for n, p in model.named_parameters() if p.requires_grad]
        with torch.no_grad():
            for n, e in zip(names, tr.ema):
                named[n].copy_(e.cpu())
    clean.to(dtype).save_pretrained(str(folder), safe_serialization=True)
    return folder

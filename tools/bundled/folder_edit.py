"""Adding a piece to a built bundled-model folder in place (`control`, `selection`, `exposure`, …): each reads the
folder's record of what its transformer holds, rewrites the transformer, and writes both back the way the recipe
exports them (fp16 weights, files 0644), so a rebuild from the same steps is byte for byte the same."""
from __future__ import annotations

import json
from pathlib import Path

import torch


def transformer_record(folder: Path) -> tuple[dict, dict]:
    """(ditfuse.json, its training → transformer record, created if missing: what the pieces read and extend)."""
    meta = json.loads((folder / "ditfuse.json").read_text())
    return meta, meta.setdefault("training", {}).setdefault("transformer", {})


def open_for_edit(folder: Path, adds: str, after: str, why: str):
    """(ditfuse.json, its transformer record, the transformer in fp32, the autoencoder) of a folder about to get the
    piece ``adds``; refuses one that has it already or lacks the piece ``after`` (``why`` says so)."""
    from ditfuse_core import checkpoint, vae as vae_mod

    meta, tr = transformer_record(folder)
    if adds in tr:
        raise SystemExit(f"{folder} already has {adds!r}")
    if after not in tr:
        raise SystemExit(why)
    model = checkpoint.load_transformer(folder, torch.float32, "cpu")
    return meta, tr, model, vae_mod.load_vae(checkpoint.vae_folder(folder), torch.float32, "cpu")


def save_in_place(model, folder: Path, meta: dict) -> None:
    model.to(torch.float16).save_pretrained(str(folder / "transformer"), safe_serialization=True)
    for f in (folder / "transformer").iterdir():
        f.chmod(0o644)
    (folder / "ditfuse.json").write_text(json.dumps(meta, indent=1))


def edit_main(argv, doc: str, adds: str, after: str, why: str, options, apply) -> int:
    """The command line of a piece that needs ``after``: FOLDER plus the piece's ``options(parser)``; ``apply(args,
    folder, record, model, vae)`` returns (the transformer, the piece's record), saved in place; prints the record."""
    import argparse

    ap = argparse.ArgumentParser(description=doc)
    ap.add_argument("folder")
    options(ap)
    a = ap.parse_args(argv)
    folder = Path(a.folder)
    meta, tr, model, vae = open_for_edit(folder, adds, after, why)
    model, tr[adds] = apply(a, folder, tr, model, vae)
    save_in_place(model, folder, meta)
    print(json.dumps(tr[adds]))
    return 0

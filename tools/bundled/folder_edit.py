"""Adding a piece to a built bundled-model folder in place (`control`, `selection`, `exposure`): each reads the
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


def save_in_place(model, folder: Path, meta: dict) -> None:
    model.to(torch.float16).save_pretrained(str(folder / "transformer"), safe_serialization=True)
    for f in (folder / "transformer").iterdir():
        f.chmod(0o644)
    (folder / "ditfuse.json").write_text(json.dumps(meta, indent=1))

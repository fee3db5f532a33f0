"""The bundled example pairs (example_images/ at the repository root): where they are and what they hold.

An installed wheel carries them as `ditfuse_core/assets/example_images` (copied there at build time by setup.py);
a git clone or an editable install reads the repository's own `example_images/`.
"""
from __future__ import annotations

import json
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
LOCATIONS = (_PACKAGE / "assets" / "example_images", _PACKAGE.parent / "example_images")


def example_dir() -> Path:
    """The folder holding the example PNGs and pairs.json."""
    for d in LOCATIONS:
        if (d / "pairs.json").is_file():
            return d
    raise FileNotFoundError("the example images are missing; looked in " + ", ".join(map(str, LOCATIONS)))


def pairs() -> dict[str, dict]:
    """task → {"image_1", "image_2", "instruction", "source"}; image names are relative to example_dir()."""
    return json.loads((example_dir() / "pairs.json").read_text())["pairs"]


def pair_paths(task: str) -> tuple[Path, Path]:
    """The two image files of a task's example pair."""
    all_pairs = pairs()
    if task not in all_pairs:
        raise ValueError(f"no example pair for task {task!r}; choose one of {', '.join(all_pairs)}")
    d, entry = example_dir(), all_pairs[task]
    return d / entry["image_1"], d / entry["image_2"]

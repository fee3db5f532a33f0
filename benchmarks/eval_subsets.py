"""Shared by the benchmarks that probe the bundled model on a few pairs of each eval set: which pairs, and
the table of differences to averaging the pixels they print."""
from __future__ import annotations

from pathlib import Path

import numpy as np

SETS = [("ivif", "ivif/tno"), ("ivif", "ivif/roadscene"), ("mff", "mff/lytro"), ("mef", "mef/mefb")]
KEY = ("Qabf", "SSIM", "VIF")


def eval_root(arg: str | None) -> Path | None:
    """shared/data/eval (or the given folder); None, after saying so, when it is absent."""
    from ditfuse_core.m3 import default_data_root

    root = Path(arg) if arg else default_data_root() / "eval"
    if not root.is_dir():
        print(f"no eval data at {root}: skipped")
        return None
    return root


def spaced_pairs(task: str, folder: Path, n: int) -> list:
    """n evenly spaced pairs of one eval set."""
    from ditfuse_core import evaluation

    pairs = evaluation.discover_pairs(task, folder)
    return pairs[:: max(1, len(pairs) // n)][:n]


def add_scores(rows: dict[str, list], name: str, task: str, g1, g2, fused, extra: tuple = ()) -> None:
    """Append KEY scores of `fused` (rounded to uint8, as a saved image) against the pair, then `extra`, to rows[name]."""
    from ditfuse_core.metrics import compute_metrics

    img = np.clip(np.round(fused), 0, 255).astype(np.uint8)
    scores = compute_metrics(g1, g2, img, list(KEY), task)
    rows.setdefault(name, []).append([scores[k] for k in KEY] + list(extra))


def delta_table(rows: dict[str, list[list[float]]], base: str, extra: tuple[str, ...] = ()) -> str:
    """Markdown: per row the mean of KEY (then of `extra` columns) over pairs, and KEY minus row `base`'s."""
    means = {r: np.mean(v, axis=0) for r, v in rows.items()}
    n = len(KEY)
    lines = ["| fusion | " + " | ".join(KEY) + " | " + " | ".join(f"Δ {k}" for k in KEY)
             + "".join(f" | {e}" for e in extra) + " |",
             "| --- |" + " ---: |" * (2 * n + len(extra))]
    for r, m in means.items():
        d = m[:n] - means[base][:n]
        lines.append(f"| {r} | " + " | ".join(f"{x:.4f}" for x in m[:n]) + " | "
                     + " | ".join(f"{x:+.4f}" for x in d) + "".join(f" | {x:.2f}" for x in m[n:]) + " |")
    return "\n".join(lines)

"""Evaluate a model folder (default: the bundled ditfuse-tiny) on shared/data/eval beside the classical
baselines, with `ditfuse eval` per benchmark, and print the summary table the model card carries.

    python scripts/eval_default_model.py [--model FOLDER] [--out out/eval_default] [--limit N]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]

SETS = [("ivif", "ivif/tno"), ("ivif", "ivif/roadscene"), ("mff", "mff/lytro"), ("mef", "mef/mefb")]
METHODS = "ditfuse,average,gff,lp,mertens"
KEY = ("Qabf", "SSIM", "VIF")


def main(argv=None) -> int:
    from ditfuse_core import evaluation
    from ditfuse_core.training.m3 import data_root

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--eval", default=None, help="shared/data/eval folder")
    ap.add_argument("--out", default=str(ROOT / "out" / "eval_default"))
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--metrics", default="default")
    ap.add_argument("--methods", default=METHODS)
    ap.add_argument("--reuse", default=None,
                    help="an earlier --out whose summary.json supplies the methods not run now (e.g. the baselines)")
    ap.add_argument("--card", action="store_true",
                    help="also write the summary into the model folder's MODEL_CARD.md (section 'Fusion metrics')")
    a = ap.parse_args(argv)
    root = Path(a.eval) if a.eval else data_root() / "eval"
    if not root.is_dir():
        raise SystemExit(f"no eval data at {root}")
    summary, lines = {}, []
    old = json.loads((Path(a.reuse) / "summary.json").read_text()) if a.reuse else {}
    for task, sub in SETS:
        args = argparse.Namespace(task=task, pairs=str(root / sub), methods=a.methods, metrics=a.metrics,
                                  out=str(Path(a.out) / sub.replace("/", "_")), limit=a.limit,
                                  no_save_fused=False, quiet=True, model=a.model, lora=None, device="cpu",
                                  dtype="auto", seed=0, steps=None)
        t = time.time()
        means = evaluation.run(args)
        n = len(evaluation.discover_pairs(task, root / sub))
        n = min(n, a.limit) if a.limit else n
        secs = round(time.time() - t, 1)
        if sub in old:
            assert old[sub]["pairs"] == n, f"{a.reuse}: {sub} has {old[sub]['pairs']} pairs, not {n}"
            means = {**old[sub]["means"], **means}
            secs += old[sub]["seconds"]
        summary[sub] = {"pairs": n, "seconds": secs, "means": means}
        if "ditfuse" not in means or "average" not in means:
            continue
        beats = {k: means["ditfuse"][k] > means["average"][k] for k in KEY}
        summary[sub]["beats_average"] = beats
        lines.append(f"\n**{sub}** ({n} pairs)\n")
        lines.append("| method | " + " | ".join(KEY) + " |")
        lines.append("| --- |" + " ---: |" * len(KEY))
        for m in METHODS.split(","):
            if m not in means:
                continue
            lines.append(f"| {m} | " + " | ".join(f"{means[m][k]:.4f}" for k in KEY) + " |")
        lines.append("\nditfuse beats averaging on: " + (", ".join(k for k in KEY if beats[k]) or "none"))
    text = "\n".join(lines)
    Path(a.out).mkdir(parents=True, exist_ok=True)
    (Path(a.out) / "summary.md").write_text(text + "\n")
    (Path(a.out) / "summary.json").write_text(json.dumps(summary, indent=1))
    print(text)
    if a.card:
        from ditfuse_core.pipeline import model_folder

        write_card_section(model_folder(a.model), summary, text)
    return 0


def write_card_section(folder: Path, summary: dict, table: str) -> None:
    """Replace the card's '## Fusion metrics' section (everything after that heading)."""
    card = folder / "MODEL_CARD.md"
    head = card.read_text().split("## Fusion metrics")[0].rstrip() if card.is_file() else "# " + folder.name
    secs = sum(v["seconds"] for v in summary.values())
    body = ["## Fusion metrics", "",
            "`python scripts/eval_default_model.py --card` (all pairs of `shared/data/eval`; `ditfuse eval` per "
            "benchmark with the model's default settings, seed 0; means over pairs; Qabf, SSIM = mean of "
            "SSIM(A,F) and SSIM(B,F), VIF = VIF(A,F) + VIF(B,F), on gray 0–255; "
            f"{secs / 60:.0f} min on this 2-core CPU for all methods and metrics).", table, ""]
    card.write_text(head + "\n\n" + "\n".join(body))


if __name__ == "__main__":
    sys.exit(main())

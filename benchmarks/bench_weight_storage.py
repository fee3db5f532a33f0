"""Weight storage modes (fp32 / bf16 / fp16 / fp8): transformer bytes, load time, RssAnon, |Δ| pixels vs bf16.

    python -m benchmarks.bench_weight_storage [--hidden 1024 --layers 8 --side 128 --steps 4] [--no-bundled]
    python -m benchmarks.bench_weight_storage --hidden 3072 --layers 4 --no-fuse --no-bundled   # real layer shapes

A random OmniGen-architecture transformer (torch's default init, head dim 64, MLP 8/3 × hidden as OmniGen-v1) is
written as an ORIGINAL-layout fp32 model.safetensors (tests/original_format.py). Each mode loads it in a fresh
process: RssAnon (/proc/self/status) before and after the load and its peak sampled during it, then fuses the
three example pairs (resized to --side, ditfuse_core.tiny's VAE). |Δ| is in 0–255 levels against the bf16
outputs. Then the bundled model at its defaults: fp8 weights against its own fp32. Not a pass/fail test.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from benchmarks import common

# mode → (compute dtype, weights); fp8 computes in bf16, as on a GPU
MODES = {"fp32": ("fp32", "auto"), "bf16": ("bf16", "auto"), "fp16": ("fp16", "auto"), "fp8": ("bf16", "fp8")}
TASKS = ("ivif", "mff", "mef")
MB = 2**20


def rss_anon(field: str = "RssAnon") -> int:
    """This process's anonymous resident memory in bytes (not ru_maxrss: that is a lifetime peak); field
    "RssFile": its file-backed pages (an fp32 model read from an fp32 file stays mmapped there)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


class PeakRss:
    """RssAnon sampled every 2 ms on a thread while the block runs."""

    def __enter__(self):
        self.peak, self._stop = rss_anon(), threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self):
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, rss_anon())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_anon())


def pairs(side: int):
    from PIL import Image

    from ditfuse_core.examples import pair_paths

    return [[Image.open(p).convert("RGB").resize((side, side), Image.BICUBIC) for p in pair_paths(t)] for t in TASKS]


def write_model(folder: Path, hidden: int, layers: int) -> None:
    import torch

    sys.path.insert(0, str(common.ROOT / "tests"))
    from original_format import save_original_folder

    from ditfuse_core.tiny import tiny_transformer_config, tiny_vae
    from ditfuse_core.transformer import DiTFuseTransformer

    torch.manual_seed(0)
    cfg = tiny_transformer_config(hidden=hidden, layers=layers, heads=hidden // 64,  # head dim 64
                                  intermediate=hidden * 8 // 3, pos_embed_max_size=64)
    save_original_folder(folder, DiTFuseTransformer(**cfg).eval(), tiny_vae())


def child(a) -> None:
    """One mode in this (fresh) process: load, measure, fuse; a JSON line on stdout, outputs to --out."""
    import torch

    from ditfuse_core import weight_storage as ws
    from ditfuse_core.checkpoint import load_transformer
    from ditfuse_core.devices import DTYPES

    dtype, weights = MODES[a.child]
    before, file_before = rss_anon(), rss_anon("RssFile")
    with PeakRss() as peak:
        model, load_s = common.timed(lambda: load_transformer(a.folder, DTYPES[dtype], "cpu", weights))
    after, file_after = rss_anon(), rss_anon("RssFile")
    sizes = ws.stored_bytes(model)
    if not a.no_fuse:
        pipe = common.random_pipeline(model)
        with torch.inference_mode():
            outs = [np.asarray(pipe.fuse(x, y, task=t, steps=a.steps, max_side=a.side)[0])
                    for (x, y), t in zip(pairs(a.side), TASKS)]
        np.save(a.out, np.stack(outs))
    print(json.dumps({"load_s": load_s, "before": before, "after": after, "peak": peak.peak,
                      "file": file_after - file_before, **sizes}))


def real_size_bytes() -> dict[str, float]:
    """OmniGen-v1's transformer (3.8 B) in bf16 and with fp8 weights, counted on the meta device (GiB)."""
    import torch

    from ditfuse_core import weight_storage as ws
    from ditfuse_core.tiny import tiny_transformer_config
    from ditfuse_core.transformer import DiTFuseTransformer

    cfg = tiny_transformer_config(hidden=3072, layers=32, heads=32, intermediate=8192, pos_embed_max_size=192)
    with torch.device("meta"):
        model = DiTFuseTransformer(**cfg)
    total = stored = 0
    for name, t in model.state_dict().items():
        total += t.numel()
        stored += t.numel() if ws.is_stored(name.rpartition(".")[0]) else 0
    return {"bf16": 2 * total / 2**30, "fp8": (2 * (total - stored) + stored) / 2**30, "stored share": stored / total}


def bundled(side: int) -> tuple[list, dict]:
    """The bundled model at its defaults: fp8 weights (fp32 compute) and bf16 against its fp32, per pair."""
    from ditfuse_core import weight_storage as ws
    from ditfuse_core.pipeline import DiTFusePipeline

    rows = []
    pipes = {"fp32": DiTFusePipeline.from_pretrained(), "fp8": DiTFusePipeline.from_pretrained(weights="fp8"),
             "bf16": DiTFusePipeline.from_pretrained(dtype="bf16")}
    for (x, y), t in zip(pairs(side), TASKS):
        out = {w: np.asarray(p.fuse(x, y, task=t)[0]).astype(np.int16) for w, p in pipes.items()}
        for mode in ("fp8", "bf16"):
            d = np.abs(out[mode] - out["fp32"])
            rows.append((t, mode, d.max(), f"{d.mean():.3f}"))
    sizes = {w: ws.stored_bytes(p.transformer) for w, p in pipes.items()}
    return rows, sizes


def scale_errors(models: dict) -> list:
    """Relative error ‖Δw‖/‖w‖ of fp8 weights with the per-tensor scale and without (a plain cast), worst
    stored layer of each model, plus small synthetic weights N(0, 0.002)."""
    import torch

    from ditfuse_core import weight_storage as ws

    def err(w):
        q, s = ws.quantise_fp8(w)
        n = w.float().norm()
        return ((q.float() * s - w).norm() / n).item(), ((w.to(ws.FP8).float() - w).norm() / n).item()

    rows = []
    for label, model in models.items():
        errs = [err(m.weight.detach()) for n, m in model.named_modules() if ws.is_stored(n) and m.weight.any()]
        rows.append((label, f"{max(e[0] for e in errs):.3f}", f"{max(e[1] for e in errs):.3f}"))
    w = torch.randn(1024, 1024, generator=torch.Generator().manual_seed(0)) * 0.002
    rows.append(("N(0, 0.002) weights", *(f"{e:.3f}" for e in err(w))))
    return rows


def run_modes(a, folder: Path, tmp: Path) -> dict:
    """Each mode in a fresh process: its JSON figures, plus its output pixels unless --no-fuse."""
    res = {}
    for mode in MODES:
        out = tmp / f"{mode}.npy"
        cmd = [sys.executable, "-m", "benchmarks.bench_weight_storage", "--child", mode, "--folder", str(folder),
               "--out", str(out), "--side", str(a.side), "--steps", str(a.steps)] + (["--no-fuse"] if a.no_fuse else [])
        line = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        res[mode] = json.loads(line)
        if out.is_file():
            res[mode]["pixels"] = np.load(out).astype(np.int16)
    return res


def mode_rows(res: dict) -> list:
    ref = res["bf16"]
    rows = []
    for mode, r in res.items():
        d = np.abs(r["pixels"] - ref["pixels"]) if "pixels" in r else None
        anon = r["after"] - r["before"]
        rows.append((mode, *MODES[mode], f"{r['total'] / MB:.0f}", f"{r['stored'] / MB:.0f}",
                     f"{r['total'] / ref['total']:.3f}", f"{r['load_s']:.2f}",
                     f"+{anon / MB:.0f} ({anon / r['total']:.2f} ×)", f"+{(r['peak'] - r['before']) / MB:.0f}",
                     f"+{r['file'] / MB:.0f}", *(("–", "–") if d is None else (d.max(), f"{d.mean():.3f}"))))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--side", type=int, default=128, help="example pairs resized to side × side px")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--bundled-side", type=int, default=256, help="example pairs for the bundled model")
    ap.add_argument("--no-bundled", action="store_true")
    ap.add_argument("--no-fuse", action="store_true", help="memory and load time only")
    ap.add_argument("--child", choices=list(MODES), help=argparse.SUPPRESS)
    ap.add_argument("--folder", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        return child(a)
    import torch

    from ditfuse_core.checkpoint import load_transformer
    from ditfuse_core.pipeline import BUNDLED_MODEL

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "model"
        write_model(folder, a.hidden, a.layers)
        file_mb = (folder / "model.safetensors").stat().st_size / MB
        res = run_modes(a, folder, Path(tmp))
        scale_rows = scale_errors({"this random model": load_transformer(folder, torch.float32),
                                   "bundled ditfuse-tiny": load_transformer(BUNDLED_MODEL, torch.float32)})
    print(f"\nRandom OmniGen-architecture transformer, hidden {a.hidden}, {a.layers} layers, from an original-layout "
          f"fp32 model.safetensors of {file_mb:.0f} MiB"
          + ("" if a.no_fuse else f"; {', '.join(TASKS)} example pairs at {a.side} px, {a.steps} steps; "
             "|Δ| in 0–255 levels vs bf16") + "\n")
    print(common.markdown_table(
        ["mode", "dtype", "weights", "transformer MiB", "stored layers MiB", "× bf16", "load s",
         "RssAnon after load MiB (× model)", "RssAnon peak MiB", "RssFile MiB", "max \\|Δ\\|", "mean \\|Δ\\|"],
        mode_rows(res), "llll" + "r" * 8))
    real = real_size_bytes()
    print(f"\nOmniGen-v1 size (counted on the meta device): bf16 {real['bf16']:.2f} GiB, fp8 weights "
          f"{real['fp8']:.2f} GiB = {real['fp8'] / real['bf16']:.3f} × bf16 (stored layers "
          f"{100 * real['stored share']:.1f} % of the parameters)")
    print("\nfp8 weight error ‖Δw‖/‖w‖, worst stored layer: with the per-tensor power-of-two scale, and a "
          "plain cast\n")
    print(common.markdown_table(["weights", "scaled", "plain cast"], scale_rows))
    if not a.no_bundled:
        rows, sizes = bundled(a.bundled_side)
        print(f"\nBundled ditfuse-tiny at its defaults (example pairs at {a.bundled_side} px) against its fp32; "
              f"transformer {sizes['fp32']['total'] / MB:.1f} → {sizes['fp8']['total'] / MB:.1f} MiB with fp8 "
              "weights "
              f"(stored layers {sizes['fp32']['stored'] / MB:.2f} → {sizes['fp8']['stored'] / MB:.2f})\n")
        print(common.markdown_table(["pair", "mode", "max \\|Δ\\|", "mean \\|Δ\\|"], rows, "llrr"))
    print(f"\n{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()

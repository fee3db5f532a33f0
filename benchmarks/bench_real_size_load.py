"""Issue #27, benchmark 2: loading OmniGen-v1 at its real size on a CPU, per weight storage mode.

    python -m benchmarks.bench_real_size_load [--dir /tmp/ditfuse-real-size] [--modes bf16 fp8] [--side 256]
                                              [--available-gib 10] [--keep] [--out benchmarks/results]

Writes an ORIGINAL-layout OmniGen-v1 folder (config.json with "su" rope scaling, model.safetensors, vae/) at the
real architecture — hidden 3072, 32 layers, 32 heads, MLP 8192, vocab 32064, position table 192 — with random
weights, in fp32 (~15.5 GB), streamed: the safetensors header is computed from a meta-device model and each
tensor's bytes are written in 64 MiB pieces cut from one random buffer (N(0, 0.02); norms 1), so writing needs
little RAM. The VAE is ditfuse_core.tiny's (SDXL-shaped, tiny): the transformer is what is measured.

Then, per mode, in fresh subprocesses: `DiTFusePipeline.from_pretrained(folder, dtype="bf16", weights=…)` (bf16:
weights "auto"; fp8: e4m3fn weights, bf16 compute), the load time, RssAnon / VmRSS / RssFile from
/proc/self/status after the load (not ru_maxrss; RssAnon is the whole process's, Python and torch
included, ~0.35 GiB before loading, and the table also gives what the load added), the model's bytes (weight_storage.stored_bytes: the whole
transformer state dict), and one fusion step at --side² in bf16 compute with one guidance branch (cfg = img_cfg
= 1: the transformer pass the memory is about; three branches triple the time, not the weights), with RssAnon and
VmHWM after it. Each mode runs twice: alone, and beside a ballast process that pins (touches) enough anonymous
memory that MemAvailable is at most --available-gib. The folder is deleted at the end unless --keep.
Writes real_size_load.csv and real_size_load.md to --out. Not a pass/fail test.

Acceptance (issue #27): bf16 RssAnon ≤ 1.15 × bf16 model bytes; fp8 RssAnon ≤ 1.15 × fp8 model bytes + 1 GiB;
both load and run the step beside the ballast.
"""
from __future__ import annotations

import argparse
import csv
import datetime as _dt
import json
import os
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

from benchmarks import common

GIB = 2**30
MIB = 2**20
REAL = dict(hidden=3072, layers=32, heads=32, intermediate=8192, pos_embed_max_size=192)
SMALL = dict(hidden=256, layers=2, heads=4, intermediate=512, pos_embed_max_size=64)  # --small: a check of the code
PIECE = 16 * MIB  # floats per written piece (64 MiB)


def status() -> dict[str, int]:
    """Memory fields of /proc/self/status, in bytes."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("RssAnon", "RssFile", "VmRSS", "VmHWM"):
            out[key] = int(rest.split()[0]) * 1024
    return out


def mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no MemAvailable in /proc/meminfo")


# ---- writing the model --------------------------------------------------------------------------------------
def write_model(folder: Path, arch: dict = REAL) -> dict:
    """The real-size original-layout folder, streamed; returns {"bytes", "seconds", "tensors"}."""
    import torch

    sys.path.insert(0, str(common.ROOT / "tests"))
    from original_format import original_state_dict, phi3_config

    from ditfuse_core.tiny import tiny_transformer_config, tiny_vae
    from ditfuse_core.transformer import DiTFuseTransformer

    t0 = time.perf_counter()
    cfg = tiny_transformer_config(**arch)
    with torch.device("meta"):
        model = DiTFuseTransformer(**cfg)
    shapes = {k: tuple(v.shape) for k, v in original_state_dict(model).items()}
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for k, shape in shapes.items():
        n = 4 * int(torch.tensor(shape).prod().item()) if shape else 4
        header[k] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    noise = (torch.randn(PIECE + 4096, generator=g) * 0.02).numpy()
    with open(folder / "model.safetensors.partial", "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for i, (k, shape) in enumerate(shapes.items()):
            n = (header[k]["data_offsets"][1] - header[k]["data_offsets"][0]) // 4
            if len(shape) == 1 and "norm" in k:
                f.write(torch.ones(n).numpy().tobytes())
                continue
            start = (i * 977) % 4096  # a different cut of the buffer per tensor
            while n > 0:
                m = min(n, PIECE)
                f.write(noise[start: start + m].tobytes())
                n -= m
    os.replace(folder / "model.safetensors.partial", folder / "model.safetensors")
    (folder / "config.json").write_text(json.dumps(phi3_config(model)))
    tiny_vae().save_pretrained(folder / "vae")
    return {"bytes": offset + 8 + len(raw), "seconds": time.perf_counter() - t0, "tensors": len(shapes)}


# ---- one load in a fresh process ----------------------------------------------------------------------------
def child(a) -> None:
    import torch
    from PIL import Image

    from ditfuse_core import weight_storage as ws
    from ditfuse_core.examples import pair_paths
    from ditfuse_core.pipeline import DiTFusePipeline

    torch.set_grad_enabled(False)
    before = status()
    t0 = time.perf_counter()
    pipe = DiTFusePipeline.from_pretrained(model=a.folder, dtype="bf16",
                                           weights="fp8" if a.child == "fp8" else "auto")
    load_s = time.perf_counter() - t0
    loaded = status()
    row = {"mode": a.child, "load_s": load_s, "before": before, "loaded": loaded,
           "model_bytes": ws.stored_bytes(pipe.transformer)["total"],
           "mem_available_loaded": mem_available()}
    if a.side:
        x, y = (Image.open(p).convert("RGB").resize((a.side, a.side), Image.BICUBIC) for p in pair_paths("ivif"))
        t0 = time.perf_counter()
        out = pipe.fuse(x, y, task="ivif", steps=1, cfg=1.0, img_cfg=1.0, max_side=a.side)[0]
        row["step_s"] = time.perf_counter() - t0
        row["stepped"] = status()
        row["output"] = list(out.size)
    print(json.dumps(row), flush=True)


BALLAST = r"""
import sys, time
import numpy as np
target = int(sys.argv[1])
def avail():
    for line in open("/proc/meminfo"):
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
blocks = []
while avail() > target + (64 << 20):
    n = min(avail() - target, 1 << 30)
    b = np.empty(n, np.uint8)
    b[::4096] = 1  # touch every page: anonymous memory, resident
    blocks.append(b)
print("ready", sum(b.nbytes for b in blocks), avail(), flush=True)
sys.stdin.read()
"""


def run_child(a, mode: str, ballast: bool) -> dict:
    env = {**os.environ, "PYTHONPATH": str(common.ROOT)}
    proc = None
    if ballast:
        proc = subprocess.Popen([sys.executable, "-c", BALLAST, str(int(a.available_gib * GIB))],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = proc.stdout.readline().split()
        if not line or line[0] != "ready":
            raise RuntimeError("the ballast process did not start")
        pinned, avail = int(line[1]), int(line[2])
    try:
        cmd = [sys.executable, "-m", "benchmarks.bench_real_size_load", "--child", mode, "--folder", str(a.folder),
               "--side", str(a.side)]
        r = subprocess.run(cmd, cwd=common.ROOT, env=env, capture_output=True, text=True)
    finally:
        if proc is not None:
            proc.stdin.close()
            proc.wait(60)
    if r.returncode != 0:
        return {"mode": mode, "ballast": ballast, "error": (r.stderr.strip().splitlines() or ["?"])[-1],
                "rc": r.returncode, **({"ballast_gib": pinned / GIB, "available_gib": avail / GIB} if ballast else {})}
    row = json.loads(r.stdout.strip().splitlines()[-1])
    row["ballast"] = ballast
    if ballast:
        row.update(ballast_gib=pinned / GIB, available_gib=avail / GIB)
    return row


def table_rows(rows: list[dict]) -> list[dict]:
    out = []
    for r in rows:
        flat = {"date": _dt.date.today().isoformat(), "mode": r["mode"], "ballast": r["ballast"],
                "available_gib_at_start": round(r.get("available_gib", float("nan")), 2) if r["ballast"] else "",
                "ballast_gib": round(r.get("ballast_gib", 0), 2) if r["ballast"] else ""}
        if "error" in r:
            flat["error"] = r["error"]
            out.append(flat)
            continue
        mb = r["model_bytes"]
        limit = 1.15 * mb + (GIB if r["mode"] == "fp8" else 0)
        flat.update(load_s=round(r["load_s"], 1), model_gib=round(mb / GIB, 3),
                    rss_anon_gib=round(r["loaded"]["RssAnon"] / GIB, 3), vm_rss_gib=round(r["loaded"]["VmRSS"] / GIB, 3),
                    rss_file_gib=round(r["loaded"]["RssFile"] / GIB, 3),
                    anon_added_gib=round((r["loaded"]["RssAnon"] - r["before"]["RssAnon"]) / GIB, 3),
                    anon_over_model=round(r["loaded"]["RssAnon"] / mb, 3), limit_gib=round(limit / GIB, 3),
                    within=r["loaded"]["RssAnon"] <= limit)
        if "step_s" in r:
            flat.update(step_s=round(r["step_s"], 1), step_rss_anon_gib=round(r["stepped"]["RssAnon"] / GIB, 3),
                        vm_hwm_gib=round(r["stepped"]["VmHWM"] / GIB, 3))
        out.append(flat)
    return out


COLUMNS = ["date", "mode", "ballast", "available_gib_at_start", "ballast_gib", "load_s", "model_gib", "rss_anon_gib",
           "vm_rss_gib", "rss_file_gib", "anon_added_gib", "anon_over_model", "limit_gib", "within", "step_s", "step_rss_anon_gib",
           "vm_hwm_gib", "error"]


def write(out: Path, rows: list[dict], written: dict) -> str:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "real_size_load.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    text = common.markdown_table(
        ["mode", "ballast (MemAvailable at start)", "load s", "model GiB", "RssAnon GiB", "VmRSS GiB", "RssFile GiB",
         "RssAnon added by the load GiB", "RssAnon / model", "limit GiB", "within", "256² step s", "RssAnon after step GiB", "VmHWM GiB"],
        [(r["mode"], f"{r['ballast_gib']} GiB ({r['available_gib_at_start']} GiB left)" if r["ballast"] else "none",
          r.get("load_s", "–"), r.get("model_gib", "–"), r.get("rss_anon_gib", "–"), r.get("vm_rss_gib", "–"),
          r.get("rss_file_gib", "–"), r.get("anon_added_gib", "–"), r.get("anon_over_model", "–"), r.get("limit_gib", "–"),
          ("yes" if r.get("within") else "no") if "within" in r else f"failed: {r.get('error')}",
          r.get("step_s", "–"), r.get("step_rss_anon_gib", "–"), r.get("vm_hwm_gib", "–")) for r in rows])
    text += (f"\n\nmodel.safetensors: {written.get('bytes', 0) / GIB:.2f} GiB fp32, {written.get('tensors')} tensors, "
             f"written in {written.get('seconds', 0):.0f} s\n")
    (out / "real_size_load.md").write_text(text)
    return text


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, default=Path("/tmp/ditfuse-real-size"))
    ap.add_argument("--modes", nargs="+", default=["bf16", "fp8"], choices=["bf16", "fp8"])
    ap.add_argument("--side", type=int, default=256, help="the fusion step's side (0: load only)")
    ap.add_argument("--available-gib", type=float, default=10.0, help="MemAvailable left beside the ballast")
    ap.add_argument("--no-plain", action="store_true", help="only the runs beside the ballast")
    ap.add_argument("--keep", action="store_true", help="keep the written folder")
    ap.add_argument("--small", action="store_true", help="a tiny model of the same layout (checks the script)")
    ap.add_argument("--out", type=Path, default=common.ROOT / "benchmarks" / "results")
    ap.add_argument("--child", choices=["bf16", "fp8"], help=argparse.SUPPRESS)
    ap.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        child(a)
        return
    a.folder = a.dir / "OmniGen-v1-random"
    written = {}
    try:
        if not (a.folder / "model.safetensors").is_file():
            written = write_model(a.folder, SMALL if a.small else REAL)
            print(f"wrote {a.folder}: {written['bytes'] / GIB:.2f} GiB in {written['seconds']:.0f} s", flush=True)
        else:
            written = {"bytes": (a.folder / "model.safetensors").stat().st_size, "seconds": 0, "tensors": "?"}
        rows = []
        for mode in a.modes:
            for ballast in ((True,) if a.no_plain else (False, True)):
                rows.append(run_child(a, mode, ballast))
                print(json.dumps(rows[-1]), flush=True)
                print(write(a.out, table_rows(rows), written), flush=True)
    finally:
        if not a.keep:
            shutil.rmtree(a.dir, ignore_errors=True)


if __name__ == "__main__":
    main()

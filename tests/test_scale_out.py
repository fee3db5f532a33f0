"""Batch fusion and evaluation split across processes — `--shard K/N` and `accelerate launch` — give exactly the
files and the report of one process, and a run that lost a rank is finished by a re-run that does only the
missing pairs."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ditfuse_core import cli

pytest.importorskip("accelerate")
FAST = ["--max-side", "32", "--steps", "1"]
# one thread per process in every run compared: CPU matmuls may round differently with another thread count
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
ACCELERATE = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port"]

# The CLI with PIL's save stalled at each process's STALL_AT-th image, after writing this rank's pid to
# MARKER.<rank>: the test then kills one rank at a known point.
STALLING_CLI = """
import os, sys, time
from PIL import Image
orig, n = Image.Image.save, [0]
def save(self, fp, *a, **k):
    n[0] += 1
    if n[0] == int(os.environ["STALL_AT"]):
        with open(os.environ["MARKER"] + "." + os.environ.get("RANK", "0"), "w") as f:
            f.write(str(os.getpid()))
        time.sleep(300)
    return orig(self, fp, *a, **k)
Image.Image.save = save
from ditfuse_core.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _pairs(root: Path, n: int) -> Path:
    for d in ("image1", "image2"):
        (root / d).mkdir(parents=True)
    for i in range(n):
        for k, d in enumerate(("image1", "image2")):
            arr = np.random.default_rng(10 * i + k).integers(0, 256, (24 + 8 * (i % 2), 32, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / d / f"p{i}.png")
    return root


def _files(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if not p.name.startswith(".")}


def _port() -> str:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def _launch(*args, script=None, env=None):
    target = ["-m", "ditfuse_core.cli"] if script is None else [str(script)]
    return subprocess.run([*ACCELERATE, _port(), *target, *args], capture_output=True, text=True,
                          env={**ENV, **(env or {})}, timeout=600)


def _single(*args):
    return subprocess.run([sys.executable, "-m", "ditfuse_core.cli", *args], capture_output=True, text=True,
                          env=ENV, timeout=600)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("scale")
    src = _pairs(root / "src", 6)
    r = _single("batch", str(src), "-o", str(root / "single"), *FAST)
    assert r.returncode == 0, r.stderr
    return root, src


def test_shards_together_make_the_single_process_set(data, tmp_path, capsys):
    root, src = data
    for k in ("1/2", "2/2"):
        r = _single("batch", str(src), "-o", str(tmp_path / "sharded"), "--shard", k, *FAST)
        assert r.returncode == 0 and f"(shard {k}): 3 written" in r.stderr, r.stderr
    assert _files(tmp_path / "sharded") == _files(root / "single")
    assert cli.main(["batch", str(src), "-o", str(tmp_path / "x"), "--shard", "3/2"]) == 2
    assert "--shard '3/2': K must be 1 … N" in capsys.readouterr().err


def test_accelerate_launch_gives_the_single_process_files_and_resumes_after_a_lost_rank(data, tmp_path):
    root, src = data
    r = _launch("batch", str(src), "-o", str(tmp_path / "multi"), *FAST)
    assert r.returncode == 0, r.stderr
    assert "(rank 1/2): 3 written" in r.stderr and "(rank 2/2): 3 written" in r.stderr, r.stderr
    assert _files(tmp_path / "multi") == _files(root / "single")

    # a rank dies (SIGKILL) while saving its second pair; the launcher stops the other; a re-run finishes the rest
    script, marker, out = tmp_path / "stalling_cli.py", tmp_path / "stalled", tmp_path / "resumed"
    script.write_text(STALLING_CLI)
    proc = subprocess.Popen([*ACCELERATE, _port(), str(script), "batch", str(src), "-o", str(out), *FAST],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**ENV, "STALL_AT": "2", "MARKER": str(marker)}, start_new_session=True)
    deadline = time.time() + 300
    while not all(Path(f"{marker}.{r}").exists() for r in (0, 1)):
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.2)
    time.sleep(0.2)  # both pids written
    os.kill(int(Path(f"{marker}.1").read_text()), signal.SIGKILL)
    try:
        proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode != 0
    left = _files(out)
    assert len(left) == 2  # the first pair of each rank
    r = _launch("batch", str(src), "-o", str(out), *FAST)
    assert r.returncode == 0, r.stderr
    assert "(rank 1/2): 2 written, 1 already there" in r.stderr and "(rank 2/2): 2 written, 1 already there" in r.stderr
    assert _files(out) == _files(root / "single")


def test_eval_under_two_processes_writes_the_single_process_report(data, tmp_path):
    root, src = data
    ev = tmp_path / "pairs"
    shutil.copytree(src / "image1", ev / "vi")
    shutil.copytree(src / "image2", ev / "ir")
    args = ["eval", "--task", "ivif", "--pairs", str(ev), "--methods", "ditfuse,average", "--metrics",
            "EN,SSIM,Qabf", "--steps", "1", "--quiet"]
    r1 = _single(*args, "--out", str(tmp_path / "one"))
    r2 = _launch(*args, "--out", str(tmp_path / "two"))
    assert r1.returncode == 0 and r2.returncode == 0, (r1.stderr, r2.stderr)
    for name in ("metrics.csv", "table.md", "contact_sheet.png"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes(), name
    assert _files(tmp_path / "one" / "fused" / "ditfuse") == _files(tmp_path / "two" / "fused" / "ditfuse")


def test_plain_torchrun_splits_the_pairs_too(data, tmp_path):
    root, src = data
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                        _port(), "-m", "ditfuse_core.cli", "batch", str(src), "-o", str(tmp_path / "tr"), *FAST],
                       capture_output=True, text=True, env=ENV, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "(rank 1/2): 3 written" in r.stderr and "(rank 2/2): 3 written" in r.stderr, r.stderr
    assert _files(tmp_path / "tr") == _files(root / "single")

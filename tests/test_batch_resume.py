"""`ditfuse batch` never loses or half-writes a file: atomic outputs, skip-and-resume, one bad pair reported and
skipped, distinct names for colliding stems, and a run killed mid-save (SIGINT, SIGKILL) that a re-run
finishes by doing only the missing pairs."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

FAST = ["--max-side", "32", "--steps", "1"]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}

# Runs the CLI with PIL's save stalled half-way through its STALL_AT-th image (bytes written and flushed to the
# temporary file), so a test can signal the process at a known point inside a save.
STALLING_CLI = """
import io, os, signal, sys, time
from PIL import Image
# A shell that starts the suite in the background (`make test &`, CI runners) hands its children SIGINT ignored,
# and Python keeps that; a user's Ctrl-C reaches a CLI with the default handler, so that is what is tested.
signal.signal(signal.SIGINT, signal.default_int_handler)
orig, n = Image.Image.save, [0]
def save(self, fp, *a, **k):
    n[0] += 1
    if n[0] == int(os.environ["STALL_AT"]) and not isinstance(fp, (str, os.PathLike)):
        buf = io.BytesIO(); orig(self, buf, *a, **k); data = buf.getvalue()
        fp.write(data[: len(data) // 2]); fp.flush()
        open(os.environ["MARKER"], "w").close()
        for _ in range(3000):  # short sleeps: a signal taken on a torch thread does not interrupt the main one's sleep
            time.sleep(0.1)
    return orig(self, fp, *a, **k)
Image.Image.save = save
from ditfuse_core.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _pairs(root: Path, names) -> Path:
    for d in ("image1", "image2"):
        (root / d).mkdir(parents=True)
    for i, name in enumerate(names):
        for k, d in enumerate(("image1", "image2")):
            arr = np.random.default_rng(10 * i + k).integers(0, 256, (24, 32, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / d / name)
    return root


def _batch(src, out, *extra, stall_at=None, marker=None):
    cmd = [sys.executable, "-m", "ditfuse_core.cli", "batch", str(src), "-o", str(out), *FAST, *extra]
    if stall_at is None:
        return subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=600)
    env = {**ENV, "STALL_AT": str(stall_at), "MARKER": str(marker)}
    return subprocess.Popen([sys.executable, "-c", STALLING_CLI, *cmd[3:]], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def _summary(stderr: str) -> str:
    return next(ln for ln in stderr.splitlines() if ln.startswith("ditfuse batch:"))


def _outputs(out: Path) -> dict:
    return {p.name: p.stat().st_mtime_ns for p in out.iterdir()} if out.is_dir() else {}


def test_batch_skips_done_pairs_reports_bad_ones_and_keeps_colliding_stems_apart(tmp_path):
    src = _pairs(tmp_path / "src", ["a.png", "b.png", "y.png", "y.jpg"])
    (src / "image2" / "b.png").write_text("broken")  # one bad pair: reported and skipped, not fatal
    out = tmp_path / "out"
    r = _batch(src, out)
    assert r.returncode == 1, r.stderr
    assert "ditfuse: skipped b.png: cannot read image" in r.stderr
    assert _summary(r.stderr).startswith("ditfuse batch: 3 written, 0 already there (skipped), 1 failed")
    first = _outputs(out)
    assert sorted(first) == ["a.png", "y_jpg.png", "y_png.png"]
    for name in first:
        Image.open(out / name).load()

    r = _batch(src, out)  # resume: nothing left but the bad pair
    assert _summary(r.stderr).startswith("ditfuse batch: 0 written, 3 already there (skipped), 1 failed")
    assert _outputs(out) == first

    (src / "image2" / "b.png").unlink()
    Image.open(src / "image2" / "a.png").save(src / "image2" / "b.png")
    r = _batch(src, out)
    assert r.returncode == 0, r.stderr
    assert _summary(r.stderr).startswith("ditfuse batch: 1 written, 3 already there (skipped), 0 failed")
    assert {k: v for k, v in _outputs(out).items() if k != "b.png"} == first

    r = _batch(src, out, "--overwrite")
    assert _summary(r.stderr).startswith("ditfuse batch: 4 written, 0 already there")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["SIGINT", "SIGKILL"])
def test_batch_killed_mid_save_leaves_no_broken_file_and_resumes(tmp_path, sig):
    names = [f"p{i}.png" for i in range(4)]
    src = _pairs(tmp_path / "src", names)
    out, marker = tmp_path / "out", tmp_path / "stalled"
    proc = _batch(src, out, stall_at=3, marker=marker)
    deadline = time.time() + 300
    while not marker.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline
        time.sleep(0.1)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    if sig == signal.SIGINT:
        assert proc.returncode == 130, err
        assert "ditfuse: interrupted" in err and "Traceback" not in err
        assert "ditfuse batch: 2 written" in err
    else:
        assert proc.returncode == -signal.SIGKILL
    done = _outputs(out)
    finished = sorted(n for n in done if not n.startswith("."))
    assert finished == names[:2]  # the third was being saved: it is not there, not even in part
    for n in finished:
        Image.open(out / n).load()
    partials = [n for n in done if n.startswith(".")]
    assert partials == [] if sig == signal.SIGINT else (len(partials) == 1 and partials[0].endswith(".part"))

    r = _batch(src, out)
    assert r.returncode == 0, r.stderr
    assert _summary(r.stderr).startswith("ditfuse batch: 2 written, 2 already there (skipped), 0 failed")
    after = _outputs(out)
    assert sorted(after) == names  # the partial is cleared
    assert all(after[n] == done[n] for n in names[:2])  # finished pairs untouched

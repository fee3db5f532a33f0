"""Headless ComfyUI executor checks (tests/comfy_inprocess_checks.py), run in their own Python process so
ComfyUI's modules and its torchvision stand-in never leak into the rest of the suite."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import comfy_harness as H


def test_inprocess_executor_suite():
    H.require(H.comfy_missing_reason())
    junit = H.artifacts_dir() / "comfy_inprocess_junit.xml"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rs",
                        str(H.ROOT / "tests" / "comfy_inprocess_checks.py"), f"--junitxml={junit}"],
                       cwd=H.ROOT, env=env, capture_output=True, text=True, timeout=900)
    tail = "\n".join(line for line in (r.stdout + r.stderr).splitlines()
                     if not line.startswith("WARNING:root"))[-6000:]
    print(tail)
    assert r.returncode == 0, tail
    m = re.search(r"(\d+) passed", r.stdout)
    assert m and int(m.group(1)) >= 15, tail

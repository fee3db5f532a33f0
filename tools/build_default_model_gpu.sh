#!/usr/bin/env bash
# Train "ditfuse-tiny" on a GPU machine in one go (the device machine: python3 with CUDA torch, accelerate,
# peft, transformers; diffusers comes from .whl). Run from the repo root with .whl and .devdata/pack
# present (make them here with `python scripts/make_train_pack.py`; .whl holds diffusers + importlib_metadata).
#   VAE_MIN=2.5 DIT_MIN=6 bash tools/build_default_model_gpu.sh
# Results in $OUT (or ./out/gpu): model.tar.gz.partNN (join: cat model.tar.gz.part* | tar xz), train.log,
# ditfuse.json, loss.png.
set -o pipefail
DEST=${OUT:-out/gpu}
mkdir -p "$DEST"
if [ -d .whl ] && ! python3 -c "import diffusers" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
nvidia-smi -L 2>/dev/null | head -1
python3 -m tools.build_default_model --vae-minutes "${VAE_MIN:-2.5}" --dit-minutes "${DIT_MIN:-6}" \
  --out /tmp/ditfuse-tiny --work /tmp/ditfuse-work --transfer-dir "$DEST" "$@" 2>&1 \
  | tee "$DEST/train.log"
rc=$?
cp /tmp/ditfuse-tiny/ditfuse.json "$DEST/" 2>/dev/null
cp /tmp/ditfuse-work/transformer_loss.png "$DEST/loss.png" 2>/dev/null
exit $rc

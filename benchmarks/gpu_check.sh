#!/usr/bin/env bash
# Issue #27, benchmark 3: OmniGen-v1 at real size (random weights, bf16) on one GPU, 1024² two-image IVIF
# fusion, 50 steps, three guidance branches: our engine, then diffusers' OmniGenPipeline with the same
# weights. One command, about 5 minutes on an H200 (the Python side cuts diffusers' steps to its budget).
#
#   bash benchmarks/gpu_check.sh [extra args for benchmarks.bench_real_size_gpu]
#
# Results (log.txt, nvidia-smi.txt, results.csv, results.json, table.md) go to $OUT, else
# /tmp/ditfuse-gpu-check/. Needs torch with CUDA, diffusers, transformers, tokenizers, pillow; ditfuse_core
# installed or from this checkout (PYTHONPATH, set below). PYTHON picks the interpreter (default python3).
# The same script on a CPU, as a check of the code: python -m benchmarks.bench_real_size_gpu --small --device cpu
set -o pipefail
cd "$(dirname "$0")/.." || exit 1
OUT_DIR="${OUT:-/tmp/ditfuse-gpu-check}"
mkdir -p "$OUT_DIR"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY="${PYTHON:-python3}"
{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,power.limit --format=csv 2>&1
  "$PY" -c "import torch, diffusers; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'diffusers', diffusers.__version__)" 2>&1
} | tee "$OUT_DIR/nvidia-smi.txt"
# 390 s for the Python run (it cuts diffusers' steps to fit), hard stop at 430 s: ≤ 7 minutes in all
timeout 430 "$PY" -m benchmarks.bench_real_size_gpu --device cuda --budget-s 390 --out "$OUT_DIR" "$@" 2>&1 \
  | tee "$OUT_DIR/log.txt"

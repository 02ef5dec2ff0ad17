#!/usr/bin/env bash
# The 2026-12-01-h200-d run's second command (~7 min): the fixes found by run-all.sh, on a fresh host with the
# CPU-built micro checkpoints copied in .gpu/micro and then to /tmp/lfm-micro6 (same recipe keys):
#   D: micro-dense with --max-mamba-cache-size 16384: the memory check (512 distinct requests) and latency c1 / cN;
#   E: micro-vl's engine shutdown with the image processor's CUDA-IPC pool freed.
# Usage: setsid nohup bash docs/gpu-runs/2026-12-01-h200-d/run-check.sh OUT D_S E_S > OUT.log 2>&1 &
set -u
OUT=$1; DLIM=$2; ELIM=$3
mkdir -p "$OUT"
export PYTHONPATH=/tmp/lfm-site PYTHONUNBUFFERED=1 LFM_MICRO_CACHE=/tmp/lfm-micro6
SKIP_BUILD=1 LFM_RUN_LIMIT=$DLIM bash docs/gpu-runs/run.sh "$OUT/d-dense-memory" conformance/test_memory.py \
  conformance/test_latency.py --lfm-model micro-dense --timeout 200 -k "not low_latency"
SKIP_BUILD=1 LFM_RUN_LIMIT=$ELIM bash docs/gpu-runs/run.sh "$OUT/e-vl-engine" conformance/test_engine.py \
  --lfm-model micro-vl --timeout 100 -k "shutdown"
echo done > "$OUT/ALLDONE"

#!/usr/bin/env bash
# Replaces run-all.sh's phases B and C once phase A is over (A's VL engine shutdown check hung until pytest-timeout's
# SIGALRM, and A's limit cut the variants that come last): micro-vl's --context-length 1024 variant, then
# micro-dense's low-latency profile.
# Usage: setsid nohup bash docs/gpu-runs/2026-12-01-h200-c/run-rest.sh OUT VL_LIMIT_S LL_LIMIT_S > OUT.rest.log 2>&1 &
set -u
OUT=$1; VLIM=$2; LLIM=$3
export PYTHONPATH=/tmp/lfm-site PYTHONUNBUFFERED=1 LFM_MICRO_CACHE=/tmp/lfm-micro
for _ in $(seq 120); do [ -f "$OUT/a-dense-vl/DONE" ] && break; sleep 2; done
pkill -f "run-all.sh" || true
sleep 1
pkill -INT -f "b-moe-latency" || true
for _ in $(seq 30); do pgrep -f "b-moe-latency" > /dev/null || break; sleep 2; done
pkill -KILL -f "b-moe-latency" || true
SKIP_BUILD=1 LFM_RUN_LIMIT=$VLIM bash docs/gpu-runs/run.sh "$OUT/b-vl-context" conformance/test_vision.py \
  --lfm-model micro-vl --timeout 200 -k "too_many_image_tokens"
SKIP_BUILD=1 LFM_RUN_LIMIT=$LLIM bash docs/gpu-runs/run.sh "$OUT/c-dense-low-latency" conformance/test_latency.py \
  --lfm-model micro-dense --timeout 400 -k "low_latency"
echo done > "$OUT/RESTDONE"

#!/usr/bin/env bash
# The 2026-12-01-h200-g run, after ../2026-12-01-h200-f/next.sh had finished with ~12 min of GPU time left, on the
# same host: micro-moe with 6 rounds on a fresh server (the command as run, in a script; OUT was /tmp/g9).
set -u
OUT=$1
export PYTHONPATH=/tmp/lfm-site PYTHONUNBUFFERED=1 LFM_MICRO_CACHE=/tmp/lfm-micro9
SKIP_BUILD=1 LFM_RUN_LIMIT=540 bash docs/gpu-runs/run.sh "$OUT/fidelity-micro-moe-6rounds" conformance/test_latency.py \
  --lfm-model micro-moe --timeout 520 -m lfm_fidelity -k test_latency_agrees --lfm-fidelity-rounds 6

#!/usr/bin/env bash
# The 2026-12-01-h200-f run, first host: ../2026-12-01-h200-e/next.sh as prepared (normalized fidelity, micro-dense
# then micro-moe), then micro-dense once more with 6 rounds on a fresh server, to see whether the normalized ratio repeats.
#   cp -r .gpu/micro /tmp/lfm-micro8 && setsid nohup bash docs/gpu-runs/2026-12-01-h200-f/run8.sh OUT &
set -u
OUT=$1
bash docs/gpu-runs/2026-12-01-h200-e/next.sh "$OUT"
export PYTHONPATH=/tmp/lfm-site PYTHONUNBUFFERED=1 LFM_MICRO_CACHE=/tmp/lfm-micro8
SKIP_BUILD=1 LFM_RUN_LIMIT=500 bash docs/gpu-runs/run.sh "$OUT/fidelity-micro-dense-6rounds" conformance/test_latency.py \
  --lfm-model micro-dense --timeout 480 -m lfm_fidelity -k test_latency_agrees --lfm-fidelity-rounds 6
echo done > "$OUT/ALLDONE8"

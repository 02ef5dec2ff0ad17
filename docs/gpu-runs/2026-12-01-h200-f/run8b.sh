#!/usr/bin/env bash
# The 2026-12-01-h200-f run, second host, after the fix of commit 196a22d (a fresh server's /metrics lacks both
# histograms; their totals count as zero now, so the first run has server figures): micro-dense with the default 4 rounds, then micro-moe with 2
# rounds (what the GPU time left allowed).
#   cp -r .gpu/micro /tmp/lfm-micro8 && setsid nohup bash docs/gpu-runs/2026-12-01-h200-f/run8b.sh OUT &
set -u
OUT=$1
mkdir -p "$OUT"
export PYTHONPATH=/tmp/lfm-site PYTHONUNBUFFERED=1 LFM_MICRO_CACHE=/tmp/lfm-micro8
SKIP_BUILD=1 LFM_RUN_LIMIT=420 bash docs/gpu-runs/run.sh "$OUT/fidelity-micro-dense" conformance/test_latency.py \
  --lfm-model micro-dense --timeout 400 -m lfm_fidelity -k test_latency_agrees
SKIP_BUILD=1 LFM_RUN_LIMIT=300 bash docs/gpu-runs/run.sh "$OUT/fidelity-micro-moe-2rounds" conformance/test_latency.py \
  --lfm-model micro-moe --timeout 280 -m lfm_fidelity -k test_latency_agrees --lfm-fidelity-rounds 2
echo done > "$OUT/ALLDONE"

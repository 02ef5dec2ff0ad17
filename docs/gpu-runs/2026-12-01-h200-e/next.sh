#!/usr/bin/env bash
# The fidelity check normalized by the server's own figures (a server launched with --enable-metrics), micro-dense
# then micro-moe (it ran in the 2026-12-01-h200-f run, run8.sh), each in its own pytest run so that
# a cut-off leaves the first report whole. ~5 min per model on the H200 (server start 60-110 s, 4 rounds ~50 s each).
# Copy the CPU-built checkpoints (.gpu/micro) with the last bundle part; then:
#   cp -r .gpu/micro /tmp/lfm-micro8 && setsid nohup bash docs/gpu-runs/2026-12-01-h200-e/next.sh OUT &
set -u
OUT=$1
mkdir -p "$OUT"
export PYTHONPATH=/tmp/lfm-site PYTHONUNBUFFERED=1 LFM_MICRO_CACHE=/tmp/lfm-micro8
for model in micro-dense micro-moe; do
  SKIP_BUILD=1 LFM_RUN_LIMIT=420 bash docs/gpu-runs/run.sh "$OUT/fidelity-$model" conformance/test_latency.py \
    --lfm-model "$model" --timeout 400 -m lfm_fidelity -k test_latency_agrees
done
echo done > "$OUT/ALLDONE"

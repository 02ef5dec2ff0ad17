#!/usr/bin/env bash
# The fidelity check as of commit 4aabf68, run unchanged in the 2026-12-01-h200-g run (warmups
# outside the server's window, a fresh server primed; fidelity_runs), micro-dense and micro-moe with the default 4
# rounds, then micro-dense with 6 rounds. ~6 min per model on the H200; each in its own pytest run so that a cut-off
# leaves the earlier reports whole. Copy the CPU-built checkpoints (.gpu/micro) with the last bundle part; then:
#   cp -r .gpu/micro /tmp/lfm-micro9 && setsid nohup bash docs/gpu-runs/2026-12-01-h200-f/next.sh OUT &
set -u
OUT=$1
mkdir -p "$OUT"
export PYTHONPATH=/tmp/lfm-site PYTHONUNBUFFERED=1 LFM_MICRO_CACHE=/tmp/lfm-micro9
for model in micro-dense micro-moe; do
  SKIP_BUILD=1 LFM_RUN_LIMIT=480 bash docs/gpu-runs/run.sh "$OUT/fidelity-$model" conformance/test_latency.py \
    --lfm-model "$model" --timeout 460 -m lfm_fidelity -k test_latency_agrees
done
echo done > "$OUT/ALLDONE"
SKIP_BUILD=1 LFM_RUN_LIMIT=560 bash docs/gpu-runs/run.sh "$OUT/fidelity-micro-dense-6rounds" conformance/test_latency.py \
  --lfm-model micro-dense --timeout 540 -m lfm_fidelity -k test_latency_agrees --lfm-fidelity-rounds 6
echo done > "$OUT/ALLDONE6"

#!/usr/bin/env bash
# The run of this folder on one H200 with the offline sglang 0.5.17 bundle (docs/development.md) installed in
# /tmp/lfm-site, side by side: the quick level on the micro checkpoints (recorded), the sampling-filter check alone
# on them (recorded) and on the user-model entry. The phases are ../2026-12-03-h200-a/run.sh's and
# ../2026-12-02-h200-b/run.sh's.
#   bash docs/gpu-runs/2026-12-03-h200-b/run.sh OUTDIR
set -u
OUTD=$1
HERE=$(dirname "$0")
mkdir -p "$OUTD"
nvidia-smi > "$OUTD/nvidia-smi.txt" 2>&1
export LFM_RUN_PART=1
bash "$HERE/../2026-12-03-h200-a/run.sh" "$OUTD" quick &
bash "$HERE/../2026-12-03-h200-a/run.sh" "$OUTD" filter-micro &
PYTEST_ADDOPTS="conformance/test_sampling.py -k filter_that_leaves" bash "$HERE/../2026-12-02-h200-b/run.sh" \
  "$OUTD" usermodel
wait
echo done > "$OUTD/ALLDONE"

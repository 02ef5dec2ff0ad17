#!/usr/bin/env bash
# The 2026-12-01-h200-e run's second command (after ../2026-12-01-h200-d/next.sh): the fidelity diagnosis on one
# micro-dense server.
set -u
OUT=$1
mkdir -p "$OUT"
export PYTHONPATH=/tmp/lfm-site:$PWD PYTHONUNBUFFERED=1 LFM_MICRO_CACHE=/tmp/lfm-micro7
python3 docs/gpu-runs/2026-12-01-h200-e/fidelity-diag.py "$OUT" 6 > "$OUT/diag.log" 2>&1
echo done > "$OUT/ALLDONE"

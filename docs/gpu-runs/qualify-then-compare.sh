#!/usr/bin/env bash
# The 2026-11-25 H100 session in one background command (after the 0.5.17 bundle is READY and .gpu/o514 is carried):
#   C: the conformance suites on sglang 0.5.17 for the three micro checkpoints, recorded, with the report;
#   D: the same chat/streaming/tools/script/parser checks of micro-dense on sglang 0.5.14 (the overlay), then
#      pytest-lfm compare D C (the upgrade 0.5.14 -> 0.5.17).  Each phase runs from its own snapshot of the checkout (later transfers change it).
# Usage: setsid nohup bash docs/gpu-runs/qualify-then-compare.sh OUT C_LIMIT_S D_LIMIT_S > OUT.log 2>&1 &
set -u
OUT=$1; CLIM=$2; DLIM=$3
mkdir -p "$OUT"
export PYTHONPATH=/tmp/lfm-site PYTHONUNBUFFERED=1 LFM_MICRO_CACHE=/tmp/lfm-micro
snap() { rm -rf "$1"; mkdir -p "$1"; tar -C "$PWD" --exclude=./.gpu --exclude=./.git -cf - . | tar -C "$1" -xf -; }
snap /tmp/lfm-repo-c
(cd /tmp/lfm-repo-c && LFM_RUN_LIMIT=$CLIM bash docs/gpu-runs/run.sh "$OUT/c-0.5.17" conformance \
  --lfm-model micro-vl --lfm-model micro-moe --lfm-model micro-dense \
  --timeout 480 --lfm-record "$OUT/c-0.5.17/recordings" -m "lfm_fidelity or not lfm_fidelity" \
  -k "not (micro-moe and (test_dtype or low_latency or fidelity or shutdown)) and not (micro-vl and (test_dtype or low_latency))")
bash .gpu/o514/install.sh > "$OUT/install-0.5.14.log" 2>&1
snap /tmp/lfm-repo-d
(cd /tmp/lfm-repo-d && PYTHONPATH=/tmp/lfm-514:/tmp/lfm-site SKIP_BUILD=1 LFM_RUN_LIMIT=$DLIM \
  bash docs/gpu-runs/run.sh "$OUT/d-0.5.14" conformance --lfm-model micro-dense --timeout 480 \
  -k "test_chat or test_streaming or test_tools or test_micro_script or test_parser_corpus or (test_latency_within_budget and not low_latency)")
(cd /tmp/lfm-repo-d && python3 -m pytest_lfm.cli compare "$OUT"/d-0.5.14/report/*.json "$OUT"/c-0.5.17/report/*.json \
  > "$OUT/compare-0.5.14-to-0.5.17.md" 2>&1; echo "compare exit $?" >> "$OUT/compare-0.5.14-to-0.5.17.md")
echo done > "$OUT/ALLDONE"

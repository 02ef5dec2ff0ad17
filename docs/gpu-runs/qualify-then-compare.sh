#!/usr/bin/env bash
# A qualification and an upgrade comparison in one background command (after the 0.5.17 bundle is READY; the 0.5.14
# overlay may still be on its way: D waits for it):
#   C: the conformance suites on sglang 0.5.17 for the three micro checkpoints, recorded, with the report:
#      every suite for all three; --lfm-dtype both for micro-dense's chat and tool suites and the dtype checks;
#      the low-latency profile and fidelity vs sglang.bench_serving.
#   D: micro-dense's chat/streaming/tools/script/parser/latency checks on sglang 0.5.14 (the overlay in
#      /tmp/lfm-514, docs/gpu-runs/stage-overlay-0.5.14.sh), then pytest-lfm compare D C (the upgrade 0.5.14 -> 0.5.17).
# Each phase runs from its own snapshot of the checkout (later copies to the host change it).
# Usage: setsid nohup bash docs/gpu-runs/qualify-then-compare.sh OUT C_LIMIT_S D_LIMIT_S > OUT.log 2>&1 &
set -u
OUT=$1; CLIM=$2; DLIM=$3
mkdir -p "$OUT"
export PYTHONPATH=/tmp/lfm-site PYTHONUNBUFFERED=1 LFM_MICRO_CACHE=/tmp/lfm-micro
snap() { rm -rf "$1"; mkdir -p "$1"; tar -C "$PWD" --exclude=./.gpu --exclude=./.git -cf - . | tar -C "$1" -xf -; }
# one line: pytest refuses a -k expression with a newline (a usage error, and the phase runs nothing)
CK="not (micro-moe and (float16 or low_latency or shutdown)) and not (micro-vl and (float16 or low_latency))"
CK="$CK and (not float16 or test_chat or test_tools or test_dtype)"
snap /tmp/lfm-repo-c
(cd /tmp/lfm-repo-c && LFM_RUN_LIMIT=$CLIM bash docs/gpu-runs/run.sh "$OUT/c-0.5.17" conformance \
  --lfm-model micro-dense --lfm-model micro-moe --lfm-model micro-vl --lfm-dtype both \
  --timeout 300 --lfm-record "$OUT/c-0.5.17/recordings" -m "lfm_fidelity or not lfm_fidelity" \
  -k "$CK")
for _ in $(seq 60); do [ -f /tmp/lfm-514/.ready ] && break; sleep 5; done
snap /tmp/lfm-repo-d
(cd /tmp/lfm-repo-d && PYTHONPATH=/tmp/lfm-514:/tmp/lfm-site SKIP_BUILD=1 LFM_RUN_LIMIT=$DLIM \
  bash docs/gpu-runs/run.sh "$OUT/d-0.5.14" conformance --lfm-model micro-dense --timeout 200 \
  -k "test_chat or test_streaming or test_tools or test_micro_script or test_parser_corpus or (test_latency_within_budget and not low_latency)")
(cd /tmp/lfm-repo-d && python3 -m pytest_lfm.cli compare "$OUT"/d-0.5.14/report/*.json "$OUT"/c-0.5.17/report/*.json \
  > "$OUT/compare-0.5.14-to-0.5.17.md" 2>&1; echo "compare exit $?" >> "$OUT/compare-0.5.14-to-0.5.17.md")
echo done > "$OUT/ALLDONE"

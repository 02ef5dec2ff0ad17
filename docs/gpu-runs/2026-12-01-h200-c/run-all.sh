#!/usr/bin/env bash
# The 2026-12-01-h200-c run in one background command, after the 0.5.17 bundle is READY (docs/gpu-runs/README.md):
#   A: micro-dense, every suite, --lfm-dtype both (float16 for the chat, tool and dtype suites), the low-latency
#      profile and fidelity vs sglang.bench_serving; micro-vl's vision, engine, script and dtype suites (the
#      --context-length 1024 variant, the engine's shutdown, float16). One pytest run, one report. Not the float16
#      probes (micro-dense's ran on this host in the 2026-12-01-h200 run), which pytest would order before the variants.
#   B: micro-moe's latency at the default profile and fidelity.
#   C: micro-vl's float16 probe (float16 with the conv state left in bfloat16).
# Usage: setsid nohup bash docs/gpu-runs/2026-12-01-h200-c/run-all.sh OUT A_LIMIT_S B_LIMIT_S > OUT.log 2>&1 &
set -u
OUT=$1; ALIM=$2; BLIM=$3
mkdir -p "$OUT"
export PYTHONPATH=/tmp/lfm-site PYTHONUNBUFFERED=1 LFM_MICRO_CACHE=/tmp/lfm-micro
# one line each: pytest refuses a -k expression with a newline
AK="not (micro-vl and not (test_vision or test_engine or test_micro_script or test_dtype))"
AK="$AK and (not float16 or test_chat or test_tools or test_dtype) and not (micro-vl and test_latency)"
AK="$AK and not without_conv_state"
LFM_RUN_LIMIT=$ALIM bash docs/gpu-runs/run.sh "$OUT/a-dense-vl" conformance \
  --lfm-model micro-dense --lfm-model micro-vl --lfm-dtype both --timeout 400 \
  -m "lfm_fidelity or not lfm_fidelity" -k "$AK"
SKIP_BUILD=1 LFM_RUN_LIMIT=$BLIM bash docs/gpu-runs/run.sh "$OUT/b-moe-latency" conformance/test_latency.py \
  --lfm-model micro-moe --timeout 300 -m "lfm_fidelity or not lfm_fidelity" -k "not low_latency"
SKIP_BUILD=1 LFM_RUN_LIMIT=180 bash docs/gpu-runs/run.sh "$OUT/c-vl-probe" conformance/test_dtype.py \
  --lfm-model micro-vl --lfm-dtype both --timeout 170 -k "without_conv_state"
echo done > "$OUT/ALLDONE"

#!/usr/bin/env bash
# The 2026-12-01-h200-d run's first command, in the background, after the 0.5.17 bundle is READY (docs/gpu-runs/README.md):
#   A: micro-dense and micro-moe: fidelity against sglang.bench_serving (4 rounds, ABBA), latency at concurrency 1
#      and N (default profile); micro-dense's dtype suite in both dtypes (the split HF-parity test's first GPU run).
#   C: vl-parity.py: micro-vl's logprobs as built, as a dense checkpoint and with the triton attention backend.
#   B: micro-vl's dtype suite (prompt-logprob shift figures) and the engine's shutdown (torch.cuda.ipc_collect).
# Usage: setsid nohup bash docs/gpu-runs/2026-12-01-h200-d/run-all.sh OUT A_S C_S B_S > OUT.log 2>&1 &
set -u
OUT=$1; ALIM=$2; CLIM=$3; BLIM=$4
HERE=docs/gpu-runs/2026-12-01-h200-d
mkdir -p "$OUT"
export PYTHONPATH=/tmp/lfm-site PYTHONUNBUFFERED=1 LFM_MICRO_CACHE=/tmp/lfm-micro
AK="not low_latency and not without_conv_state and not (float16 and test_latency) and not (micro-moe and test_dtype)"
LFM_RUN_LIMIT=$ALIM bash docs/gpu-runs/run.sh "$OUT/a-dense-moe" conformance/test_latency.py conformance/test_dtype.py \
  --lfm-model micro-dense --lfm-model micro-moe --lfm-dtype both --timeout 400 \
  -m "lfm_fidelity or not lfm_fidelity" -k "$AK"
mkdir -p "$OUT/c-vl-parity"
PYTHONPATH=$PWD:$PYTHONPATH timeout -s INT -k 30 "$CLIM" python3 "$HERE/vl-parity.py" "$OUT/c-vl-parity/vl-parity.json" bfloat16 \
  > "$OUT/c-vl-parity/log.txt" 2>&1
echo "exit $?" > "$OUT/c-vl-parity/DONE"
BK="(test_dtype and not without_conv_state) or (test_engine_shutdown and not float16)"
SKIP_BUILD=1 LFM_RUN_LIMIT=$BLIM bash docs/gpu-runs/run.sh "$OUT/b-vl" conformance/test_dtype.py conformance/test_engine.py \
  --lfm-model micro-vl --lfm-dtype both --timeout 200 -k "$BK"
echo done > "$OUT/ALLDONE"

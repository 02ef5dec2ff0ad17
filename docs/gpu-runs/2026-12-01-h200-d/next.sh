#!/usr/bin/env bash
# What the 2026-12-01-h200-d run left, ~15 min after staging (it ran as the 2026-12-01-h200-e run).
# Copy the CPU-built checkpoints (.gpu/micro: dense, moe, vl of the current recipe keys) with the last bundle part;
# then: cp -r .gpu/micro /tmp/lfm-micro7 && setsid nohup bash docs/gpu-runs/2026-12-01-h200-d/next.sh OUT &
#   F: fidelity vs bench_serving on the fixed servers (--max-mamba-cache-size), micro-dense then micro-moe;
#   G: the memory check on micro-dense launched WITHOUT the flag (expected: fail) and micro-vl's dtype suite
#      (the prompt-id check: xfail expected; parity on the real tokens) and engine shutdown.
set -u
OUT=$1
mkdir -p "$OUT"
export PYTHONPATH=/tmp/lfm-site PYTHONUNBUFFERED=1 LFM_MICRO_CACHE=/tmp/lfm-micro7
SKIP_BUILD=1 LFM_RUN_LIMIT=600 bash docs/gpu-runs/run.sh "$OUT/f-fidelity" conformance/test_latency.py \
  --lfm-model micro-dense --lfm-model micro-moe --timeout 500 -m "lfm_fidelity or not lfm_fidelity" \
  -k "test_latency_agrees or (concurrency-1 and not low_latency)"
cat > "$OUT/unbounded.toml" <<'TOML'
[[model]]
id = "micro-dense-unbounded"
family = "dense"
micro = "dense"
capabilities = ["chat", "tools"]
chat_template = "lfm2.5"
launch_args = ["--tool-call-parser", "lfm2", "--cuda-graph-max-bs", "8", "--max-total-tokens", "1048576"]
min_sglang = "0.5.10"
dtypes = ["bfloat16"]
TOML
SKIP_BUILD=1 LFM_RUN_LIMIT=240 bash docs/gpu-runs/run.sh "$OUT/g-unbounded-memory" conformance/test_memory.py \
  --lfm-matrix "$OUT/unbounded.toml" --lfm-model micro-dense-unbounded --timeout 200
SKIP_BUILD=1 LFM_RUN_LIMIT=300 bash docs/gpu-runs/run.sh "$OUT/g-vl" conformance/test_dtype.py \
  conformance/test_engine.py --lfm-model micro-vl --lfm-dtype both --timeout 200 \
  -k "(test_dtype and not without_conv_state) or (test_engine_shutdown and not float16)"
echo done > "$OUT/ALLDONE"

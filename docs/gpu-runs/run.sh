#!/usr/bin/env bash
# How the runs under docs/gpu-runs/ were made, on a GPU host with no network and no install of this project:
#   1. copy the offline sglang bundle (../shared/gpu/README.md) to the host and install it: receive.sh prints READY;
#   2. bash docs/gpu-runs/run.sh OUTDIR [pytest arguments]   (in the background: setsid ... &)
#      LFM_RUN_LIMIT=S interrupts pytest (SIGINT: the report is still written) after S seconds; SKIP_BUILD=1.
# It builds the micro checkpoints on the GPU (timed), verifies them with transformers, then runs the conformance
# suites with the project's report writer and recorder. OUTDIR ends up with build.log, verify-*.json, pytest.log,
# report/ (JSON + Markdown), recordings/ and DONE.
set -u
OUTD=$1; shift
[ -f .gpu/c5/boot/env.sh ] && source .gpu/c5/boot/env.sh
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 LFM_MICRO_CACHE=${LFM_MICRO_CACHE:-/tmp/lfm-micro}
mkdir -p "$OUTD"
nvidia-smi > "$OUTD/nvidia-smi.txt" 2>&1
if [ -z "${SKIP_BUILD:-}" ]; then
  ( time python3 -m pytest_lfm.cli micro build -v ) > "$OUTD/build.log" 2>&1
  for n in dense moe vl; do
    python3 -m pytest_lfm.cli micro verify "$n" --json > "$OUTD/verify-$n.json" 2>> "$OUTD/build.log"
  done
fi
timeout -s INT -k 90 "${LFM_RUN_LIMIT:-0}" python3 -m pytest -p pytest_lfm.plugin -p no:cacheprovider -rfExX --junitxml "$OUTD/junit.xml" \
  --lfm-report "$OUTD/report" "$@" > "$OUTD/pytest.log" 2>&1
rc=$?
# what is left once pytest has exited: no sglang process, no GPU memory in use
{ nvidia-smi --query-gpu=index,memory.used --format=csv; nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv
  ps -eo pid,etimes,args | grep -E "sglang|sgl_|lfm" | grep -v -E "grep|run.sh|qualify" || echo "no sglang process"; } > "$OUTD/after.txt" 2>&1
echo "exit $rc" > "$OUTD/DONE"

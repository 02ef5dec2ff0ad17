#!/usr/bin/env bash
# The runs of this folder on one H200 with the offline sglang 0.5.17 bundle (docs/development.md) installed in
# /tmp/lfm-site (no install of this project: it runs from the checkout, hence -p pytest_lfm.plugin).
#   bash docs/gpu-runs/2026-12-03-h200-a/run.sh OUTDIR [PHASE ...]
# phases: full and usermodel (../2026-12-02-h200-b/run.sh's), quick (every functional suite on one server per micro
# checkpoint, recorded), seeded (the same-seed and different-seed checks on the seeded launches, recorded), and
# together (the default: quick, seeded and usermodel side by side), filter (the sampling-filter check on the micro
# checkpoints, recorded, beside usermodel restricted to it).
# Each phase writes OUTDIR/<phase>/ (command.txt, pytest.log, report/, DONE: exit code and wall time, after.txt: GPU
# memory and sglang processes afterwards).
set -u
OUTD=$1; shift
PHASES=${*:-together}
HERE=$(dirname "$0")
export PYTHONPATH=$PWD:/tmp/lfm-site PYTHONUNBUFFERED=1 LFM_MICRO_CACHE=${LFM_MICRO_CACHE:-/tmp/lfm-micro}
PYTEST=(python3 -m pytest -p pytest_lfm.plugin -p no:cacheprovider -rfEX)
mkdir -p "$OUTD"

timed() {  # timed DIR LIMIT pytest-args...: the pytest command, its wall time and exit code, what it left
  local dir=$1 limit=$2; shift 2
  mkdir -p "$dir"
  echo "${PYTEST[*]} $*" > "$dir/command.txt"
  local t0=$SECONDS
  timeout -s INT -k 60 "$limit" "${PYTEST[@]}" "$@" > "$dir/pytest.log" 2>&1
  echo "exit $? wall $((SECONDS - t0)) s" > "$dir/DONE"
  { nvidia-smi --query-gpu=index,memory.used --format=csv
    nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv
    ps -eo pid,etimes,args | grep -E "sglang|sgl_|standin" | grep -v -E "grep|run.sh" || echo "no sglang process"
  } > "$dir/after.txt" 2>&1
}

for phase in $PHASES; do
  case $phase in
  together)
    nvidia-smi > "$OUTD/nvidia-smi.txt" 2>&1
    export LFM_RUN_PART=1
    bash "$0" "$OUTD" quick & bash "$0" "$OUTD" seeded & bash "$HERE/../2026-12-02-h200-b/run.sh" "$OUTD" usermodel
    wait; unset LFM_RUN_PART ;;
  quick)
    timed "$OUTD/quick" 480 --lfm-level quick --lfm-report "$OUTD/quick/report" --lfm-record "$OUTD/quick/recordings" ;;
  seeded)  # the seeded launches (--enable-deterministic-inference) and only the checks that need them
    timed "$OUTD/seeded" 480 conformance/test_sampling.py -k deterministic --lfm-report "$OUTD/seeded/report" \
      --lfm-record "$OUTD/seeded/recordings" ;;
  filter)
    export LFM_RUN_PART=1
    bash "$0" "$OUTD" filter-micro &
    PYTEST_ADDOPTS="conformance/test_sampling.py -k filter_that_leaves" bash "$HERE/../2026-12-02-h200-b/run.sh" \
      "$OUTD" usermodel
    wait; unset LFM_RUN_PART ;;
  filter-micro)
    timed "$OUTD/filter" 400 conformance/test_sampling.py -k filter_that_leaves --lfm-report "$OUTD/filter/report" \
      --lfm-record "$OUTD/filter/recordings" ;;
  *) LFM_RUN_PART=1 bash "$HERE/../2026-12-02-h200-b/run.sh" "$OUTD" "$phase" ;;
  esac
done
[ -n "${LFM_RUN_PART:-}" ] || echo done > "$OUTD/ALLDONE"

#!/usr/bin/env bash
# The runs of this folder, in order, on one H200 with the offline sglang 0.5.17 bundle (docs/development.md) installed in
# /tmp/lfm-site (no install of this project: it runs from the checkout, hence -p pytest_lfm.plugin).
#   bash docs/gpu-runs/2026-12-02-h200-a/run.sh OUTDIR [PHASE ...]     phases: full signals quick merge baseurl
# Each phase writes OUTDIR/<phase>/ (pytest.log, report/, after.txt: GPU memory and sglang processes afterwards).
set -u
OUTD=$1; shift
PHASES=${*:-full signals quick merge baseurl}
export PYTHONPATH=$PWD:/tmp/lfm-site PYTHONUNBUFFERED=1 LFM_MICRO_CACHE=${LFM_MICRO_CACHE:-/tmp/lfm-micro}
PYTEST=(python3 -m pytest -p pytest_lfm.plugin -p no:cacheprovider -rfEX)
# A job started with & in a script begins with SIGINT ignored (and under nohup SIGHUP too), and Python then leaves it
# ignored: the signal runs start pytest with both at their defaults, as a terminal's foreground job has them.
DEFAULT_SIGNALS=(python3 -c 'import os, signal, sys
for s in (signal.SIGINT, signal.SIGHUP): signal.signal(s, signal.SIG_DFL)
os.execvp(sys.argv[1], sys.argv[1:])')
mkdir -p "$OUTD"
python3 -c "from pytest_lfm import micro; print(*(micro.checkpoint_dir(n).name for n in micro.NAMES))" > "$OUTD/micro-keys.txt" 2>&1

after() {  # what is left: GPU memory, GPU processes, sglang processes
  { nvidia-smi --query-gpu=index,memory.used --format=csv
    nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv
    ps -eo pid,etimes,args | grep -E "sglang|sgl_|standin" | grep -v -E "grep|run.sh" || echo "no sglang process"
  } > "$1/after.txt" 2>&1
}

timed() {  # timed DIR LIMIT pytest-args...: the pytest command, its wall time and exit code
  local dir=$1 limit=$2; shift 2
  mkdir -p "$dir"
  echo "${PYTEST[*]} $*" > "$dir/command.txt"
  local t0=$SECONDS
  timeout -s INT -k 60 "$limit" "${PYTEST[@]}" "$@" > "$dir/pytest.log" 2>&1
  echo "exit $? wall $((SECONDS - t0)) s" > "$dir/DONE"
  after "$dir"
}

for phase in $PHASES; do
  case $phase in
  full)  # the README's main command: default selection (the three micro checkpoints), nothing deselected
    nvidia-smi > "$OUTD/nvidia-smi.txt" 2>&1
    timed "$OUTD/full" 900 --lfm-report "$OUTD/full/report" --lfm-record "$OUTD/full/recordings" ;;
  baseurl)  # micro-dense's server suites against a server started by hand, then on a server the plugin launches
    model=$(python3 -c "from pytest_lfm import micro; print(micro.build('dense'))")
    args=$(python3 -c "from pytest_lfm.matrix import load_matrix, LaunchConfig; \
print(' '.join(LaunchConfig(load_matrix().get('micro-dense')).server_args()))")
    mkdir -p "$OUTD/baseurl"
    setsid python3 -m sglang.launch_server --model-path "$model" --port 31000 $args > "$OUTD/baseurl/server.log" 2>&1 &
    for _ in $(seq 300); do curl -sf localhost:31000/health_generate > /dev/null && break; sleep 1; done
    timed "$OUTD/baseurl/external" 600 conformance --lfm-model micro-dense -m "not lfm_live" \
      --lfm-base-url http://127.0.0.1:31000 --lfm-report "$OUTD/baseurl/external/report"
    pkill -TERM -f "port 31000"; sleep 10
    timed "$OUTD/baseurl/launched" 600 conformance --lfm-model micro-dense -m "not lfm_live" \
      --lfm-report "$OUTD/baseurl/launched/report" ;;
  quick)  # the quick level on the default selection
    timed "$OUTD/quick" 600 --lfm-level quick --lfm-report "$OUTD/quick/report" ;;
  signals)  # a run stopped by SIGTERM once its server is up, and one stopped by two Ctrl-C (the second in teardown)
    for how in term int-int; do
      dir="$OUTD/signal-$how"; mkdir -p "$dir"
      "${DEFAULT_SIGNALS[@]}" "${PYTEST[@]}" --lfm-model micro-dense --lfm-level quick conformance/test_chat.py \
        > "$dir/pytest.log" 2>&1 &
      pid=$!
      for _ in $(seq 300); do grep -q "ready in" "$dir/pytest.log" && break; sleep 1; done
      sleep 3
      t0=$SECONDS
      if [ "$how" = term ]; then kill -TERM $pid; else kill -INT $pid; sleep 0.5; kill -INT $pid; fi
      wait $pid; echo "exit $? $((SECONDS - t0)) s after the first signal" > "$dir/DONE"
      sleep 2; after "$dir"
    done ;;
  merge)  # one qualification split over two processes sharing the GPU (as over two hosts), merged into one report
    timed "$OUTD/merge/dense" 600 --lfm-level quick --lfm-model micro-dense --lfm-report "$OUTD/merge/dense/report" &
    timed "$OUTD/merge/moe-vl" 600 --lfm-level quick --lfm-model micro-moe --lfm-model micro-vl \
      --lfm-report "$OUTD/merge/moe-vl/report" &
    wait
    python3 -m pytest_lfm.cli merge "$OUTD"/merge/dense/report/*.json "$OUTD"/merge/moe-vl/report/*.json \
      -o "$OUTD/merge/QUALIFICATION.json" > "$OUTD/merge/merge.log" 2>&1
    echo "exit $?" >> "$OUTD/merge/merge.log"
    # the merged parts against the same level run in one process (the quick phase)
    python3 -m pytest_lfm.cli compare "$OUTD"/quick/report/*.json "$OUTD/merge/QUALIFICATION.json" --same-verdicts \
      > "$OUTD/merge/compare-with-quick.md" 2>&1
    echo "exit $?" >> "$OUTD/merge/compare-with-quick.md" ;;
  esac
done
echo done > "$OUTD/ALLDONE"

#!/usr/bin/env bash
# The runs of this folder, in order, on one H200 with the offline sglang 0.5.17 bundle (docs/development.md) installed in
# /tmp/lfm-site (no install of this project: it runs from the checkout, hence -p pytest_lfm.plugin).
#   bash docs/gpu-runs/2026-12-02-h200-b/run.sh OUTDIR [PHASE ...]
# phases: together (the default: full and usermodel side by side), full, usermodel, quick, signals, merge, baseurl.
# Each phase writes OUTDIR/<phase>/ (pytest.log, report/, after.txt: GPU memory and sglang processes afterwards).
set -u
OUTD=$1; shift
PHASES=${*:-together}
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
  together)  # full, and usermodel started beside it 30 s later (two servers of the quick level: it ends before the
    # full run's timing and memory checks, which run last)
    LFM_RUN_PART=1 bash "$0" "$OUTD" full & sleep 30; LFM_RUN_PART=1 bash "$0" "$OUTD" usermodel; wait ;;
  full)  # the README's main command: default selection (the three micro checkpoints), nothing deselected
    nvidia-smi > "$OUTD/nvidia-smi.txt" 2>&1
    timed "$OUTD/full" 780 --lfm-report "$OUTD/full/report" --lfm-record "$OUTD/full/recordings" ;;
  usermodel)  # micro-dense's and micro-vl's built directories as a user's own models (--lfm-matrix, no micro key):
    # the checks a user with real weights gets (structure, not exact answers), on one server per model
    mkdir -p "$OUTD/usermodel"
    python3 - "$OUTD/usermodel/user.toml" <<'PY'
import json, sys
from pytest_lfm import micro
from pytest_lfm.matrix import load_matrix
lines = []
for name in ("micro-dense", "micro-vl"):
    spec = load_matrix().get(name)
    lines += ["[[model]]", f'id = "{micro.build(spec.micro)}"', f'family = "{spec.family}"',
              f"capabilities = {json.dumps(sorted(spec.capabilities))}", f'chat_template = "{spec.chat_template}"',
              f"launch_args = {json.dumps(list(spec.launch_args))}", 'min_sglang = "0.5.10"', 'dtypes = ["bfloat16"]', ""]
open(sys.argv[1], "w").write("\n".join(lines))
PY
    # --option=PATH, never --option PATH: pytest takes a separate argument that names an existing path as a test
    # path when it looks for its rootdir (here /tmp: no pyproject.toml, no testpaths, tests/ collected)
    ids=$(grep '^id = ' "$OUTD/usermodel/user.toml" | sed 's/id = "\(.*\)"/--lfm-model=\1/' | tr '\n' ' ')
    # shellcheck disable=SC2086  # $ids is --lfm-model=PATH, twice
    timed "$OUTD/usermodel" 600 --lfm-matrix="$OUTD/usermodel/user.toml" $ids --lfm-level quick \
      --lfm-report="$OUTD/usermodel/report" ;;
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
[ -n "${LFM_RUN_PART:-}" ] || echo done > "$OUTD/ALLDONE"

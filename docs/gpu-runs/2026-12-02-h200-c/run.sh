#!/usr/bin/env bash
# The runs of this folder, in order, on one H200 with the offline sglang 0.5.17 bundle (docs/development.md) installed in
# /tmp/lfm-site (no install of this project: it runs from the checkout, hence -p pytest_lfm.plugin).
#   bash docs/gpu-runs/2026-12-02-h200-c/run.sh OUTDIR [PHASE ...]
# phases: together (full and usermodel side by side), full, usermodel, surface (the suites of the request surface
# and those the micro script change touches, recorded). The quick, signals, merge and
# baseurl phases are those of ../2026-12-02-h200-a/run.sh.
# Each phase writes OUTDIR/<phase>/ (pytest.log, report/, after.txt: GPU memory and sglang processes afterwards).
set -u
OUTD=$1; shift
PHASES=${*:-together}
export PYTHONPATH=$PWD:/tmp/lfm-site PYTHONUNBUFFERED=1 LFM_MICRO_CACHE=${LFM_MICRO_CACHE:-/tmp/lfm-micro}
PYTEST=(python3 -m pytest -p pytest_lfm.plugin -p no:cacheprovider -rfEX)
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
  full)  # the README's main command: default selection (the three micro checkpoints), nothing deselected, recorded
    nvidia-smi > "$OUTD/nvidia-smi.txt" 2>&1
    timed "$OUTD/full" 780 --lfm-report "$OUTD/full/report" --lfm-record "$OUTD/full/recordings" ;;
  surface)  # default selection, full level: structured output, sampling, completions, images, forced calls, scripted turns
    nvidia-smi > "$OUTD/nvidia-smi.txt" 2>&1
    timed "$OUTD/surface" 500 conformance/test_structured_output.py conformance/test_sampling.py \
      conformance/test_completions.py conformance/test_images.py conformance/test_tool_choice.py \
      conformance/test_micro_script.py --lfm-report "$OUTD/surface/report" --lfm-record "$OUTD/surface/recordings" ;;
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
  esac
done
[ -n "${LFM_RUN_PART:-}" ] || echo done > "$OUTD/ALLDONE"

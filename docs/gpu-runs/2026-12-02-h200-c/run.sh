#!/usr/bin/env bash
# The runs of this folder on one H200 with the offline sglang 0.5.17 bundle (docs/development.md) installed in
# /tmp/lfm-site (no install of this project: it runs from the checkout, hence -p pytest_lfm.plugin).
#   bash docs/gpu-runs/2026-12-02-h200-c/run.sh OUTDIR [PHASE ...]
# phases: surface (the suites of the request surface and those the micro script change touches, recorded), and
# together, full, usermodel: ../2026-12-02-h200-b/run.sh's (the default: together). The quick, signals, merge and
# baseurl phases are those of ../2026-12-02-h200-a/run.sh.
# Each phase writes OUTDIR/<phase>/ (pytest.log, report/, after.txt: GPU memory and sglang processes afterwards).
set -u
OUTD=$1; shift
PHASES=${*:-together}
HERE=$(dirname "$0")
mkdir -p "$OUTD"
for phase in $PHASES; do
  case $phase in
  surface)  # default selection, full level: structured output, sampling, completions, images, forced calls, scripted turns
    export PYTHONPATH=$PWD:/tmp/lfm-site PYTHONUNBUFFERED=1 LFM_MICRO_CACHE=${LFM_MICRO_CACHE:-/tmp/lfm-micro}
    python3 -c "from pytest_lfm import micro; print(*(micro.checkpoint_dir(n).name for n in micro.NAMES))" \
      > "$OUTD/micro-keys.txt" 2>&1
    nvidia-smi > "$OUTD/nvidia-smi.txt" 2>&1
    mkdir -p "$OUTD/surface"
    cmd=(python3 -m pytest -p pytest_lfm.plugin -p no:cacheprovider -rfEX conformance/test_structured_output.py
         conformance/test_sampling.py conformance/test_completions.py conformance/test_images.py
         conformance/test_tool_choice.py conformance/test_micro_script.py --lfm-report "$OUTD/surface/report"
         --lfm-record "$OUTD/surface/recordings")
    echo "${cmd[*]}" > "$OUTD/surface/command.txt"
    t0=$SECONDS
    timeout -s INT -k 60 500 "${cmd[@]}" > "$OUTD/surface/pytest.log" 2>&1
    echo "exit $? wall $((SECONDS - t0)) s" > "$OUTD/surface/DONE"
    { nvidia-smi --query-gpu=index,memory.used --format=csv
      nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv
      ps -eo pid,etimes,args | grep -E "sglang|sgl_|standin" | grep -v -E "grep|run.sh" || echo "no sglang process"
    } > "$OUTD/surface/after.txt" 2>&1 ;;
  *) LFM_RUN_PART=1 bash "$HERE/../2026-12-02-h200-b/run.sh" "$OUTD" "$phase" ;;
  esac
done
echo done > "$OUTD/ALLDONE"

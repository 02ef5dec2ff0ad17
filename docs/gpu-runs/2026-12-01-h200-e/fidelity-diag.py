"""Where does the fidelity gap come from (2026-12-01-h200-e)? One micro-dense server (the plugin's SglangServer, the matrix's
launch), then on it, in the order O B B O O B: the plugin's client in a fresh process (O) and sglang.bench_serving (B),
each the workload (Workload(), = WORKLOAD) of test_latency_agrees_with_bench_serving; then the fidelity check
itself through pytest against that server (--lfm-base-url: the plugin's client inside the pytest process) with
--lfm-fidelity-rounds ROUNDS (the GPU time ended during it).
Writes OUT/diag.jsonl (one line per run), OUT/h-fidelity/ (run.sh's layout), OUT/diag-PORT.log (the server's log)."""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from pytest_lfm import latency
from pytest_lfm.matrix import LaunchConfig, load_matrix
from pytest_lfm.server import SglangServer

out = Path(sys.argv[1])
rounds = sys.argv[2]
out.mkdir(parents=True, exist_ok=True)
spec = load_matrix().get("micro-dense")
config = LaunchConfig(spec)
path = spec.model_path()
server = SglangServer(path, config.server_args(), env=config.environment(), gpus=[0], log_dir=out, name="diag")
OURS = ("import json, sys; from pytest_lfm import latency as l; "
        "r = l.measure(sys.argv[1], sys.argv[2], l.load_tokenizer(sys.argv[2]), l.Workload()); "
        "print(json.dumps(r.figures()))")
try:
    server.start()
    print("started in", server.startup_seconds, flush=True)
    with (out / "diag.jsonl").open("a") as log:
        for i, side in enumerate("OBBOOB"):
            t = time.time()
            if side == "O":
                proc = subprocess.run([sys.executable, "-c", OURS, server.base_url, path], capture_output=True,
                                      text=True, check=True)
                rec = json.loads(proc.stdout.strip().splitlines()[-1])
            else:
                rec = latency.run_bench_serving(server.base_url, path, path, latency.Workload())
            keys = ("mean_ttft_ms", "median_ttft_ms", "mean_tpot_ms", "median_tpot_ms", "completed", "failed")
            line = {"i": i, "side": "plugin, fresh process" if side == "O" else "bench_serving",
                    "seconds": round(time.time() - t, 1), **{k: rec.get(k) for k in keys}}
            print(line, flush=True)
            log.write(json.dumps(line) + "\n")
            log.flush()
    env = {**os.environ, "SKIP_BUILD": "1", "LFM_RUN_LIMIT": "420"}
    subprocess.run(["bash", "docs/gpu-runs/run.sh", str(out / "h-fidelity"), "conformance/test_latency.py",
                    "--lfm-base-url", server.base_url, "--lfm-model", "micro-dense", "--lfm-fidelity-rounds", rounds,
                    "--timeout", "400", "-m", "lfm_fidelity", "-k", "test_latency_agrees"], env=env, check=False)
finally:
    server.stop()
    (out / "DIAGDONE").write_text("done\n")

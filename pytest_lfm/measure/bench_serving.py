"""``python -m sglang.bench_serving`` run as a subprocess on the same workload as the plugin's client."""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from pytest_lfm.measure.client import EXTRA_BODY
from pytest_lfm.measure.workload import Workload


def bench_serving_command(base_url: str, model: str, tokenizer_path: str, workload: Workload,
                          output_file: Path) -> list[str]:
    """The ``sglang.bench_serving`` command for the same workload (same seed: the same prompts)."""
    cmd = [
        sys.executable, "-m", "sglang.bench_serving", "--backend", "sglang-oai-chat", "--base-url", base_url,
        "--model", model, "--tokenizer", tokenizer_path, "--dataset-name", "random-ids",
        "--random-input-len", str(workload.input_len), "--random-output-len", str(workload.output_len),
        "--random-range-ratio", "1.0", "--num-prompts", str(workload.num_prompts),
        "--max-concurrency", str(workload.concurrency), "--warmup-requests", str(workload.warmup_requests),
        "--seed", str(workload.seed), "--output-file", str(output_file), "--disable-tqdm",
        "--extra-request-body", json.dumps(EXTRA_BODY),
    ]
    if workload.flush_cache:
        cmd.append("--flush-cache")
    return cmd


def run_bench_serving(base_url: str, model: str, tokenizer_path: str, workload: Workload,
                      timeout: float = 900.0) -> dict[str, Any]:
    """Run bench_serving against the server and return its result record (mean_ttft_ms, mean_tpot_ms, ...)."""
    with tempfile.TemporaryDirectory(prefix="lfm-bench-") as tmp:
        out = Path(tmp) / "bench.jsonl"
        cmd = bench_serving_command(base_url, model, tokenizer_path, workload, out)
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        if proc.returncode != 0 or not out.is_file():
            tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-40:])
            raise RuntimeError(f"bench_serving failed (exit {proc.returncode}): {' '.join(cmd)}\n{tail}")
        record: dict[str, Any] = json.loads(out.read_text().strip().splitlines()[-1])
        return record

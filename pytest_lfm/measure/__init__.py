"""Measurement library of the suites: latency runs as ``sglang.bench_serving`` makes them, their statistics and
budgets, bench_serving itself and the server's own metrics for the fidelity check, and float16/bfloat16 logprobs.

Usable without pytest::

    from pytest_lfm.measure.client import measure
    from pytest_lfm.measure.stats import judge
    from pytest_lfm.measure.workload import Workload, load_tokenizer

    tokenizer = load_tokenizer("/path/to/model")
    result = measure("http://127.0.0.1:30000", "/path/to/model", tokenizer, Workload(concurrency=1))
    print(result.figures(), judge(result, {"ttft_ms": 10, "tpot_ms": 1}))
"""

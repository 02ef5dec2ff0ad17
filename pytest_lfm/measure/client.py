"""A streaming chat client that times requests the way ``sglang.bench_serving --backend sglang-oai-chat`` does.

Every request asks for a fixed number of tokens with ``ignore_eos``; a few warmup requests run first, then the
prefix cache is flushed and the prompts run at a fixed concurrency (``run_load``, ``measure``).

One departure, made on both sides: every request (and bench_serving, through ``--extra-request-body``) asks for
``skip_special_tokens: false``. A model that answers random ids with special tokens only streams no content otherwise,
and TTFT and ITL read 0 in the plugin and in bench_serving alike (a micro checkpoint did, H200, 2026-12-01).

The client is aiohttp with one session (one connection) per request, as in bench_serving: an httpx client measured
about 1 ms more TTFT than bench_serving against the same stand-in server, aiohttp within 0.5%.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping, Sequence
from typing import Any

import aiohttp

from pytest_lfm.measure.stats import LatencyResult, RequestTiming, summarize
from pytest_lfm.measure.workload import Prompt, Workload, random_ids_prompts

READ_BUFSIZE = 10 * 1024**2  # bench_serving's aiohttp read buffer
EXTRA_BODY: dict[str, Any] = {"skip_special_tokens": False}  # what both clients add to bench_serving's body


def chat_payload(model: str, prompt: Prompt, max_tokens: int | None = None) -> dict[str, Any]:
    """bench_serving's sglang-oai-chat request body, with the usage chunk requested (as sglang >= 0.5.23 does) and
    ``EXTRA_BODY``."""
    return {
        "model": model,
        "messages": [{"role": "user", "content": prompt.text}],
        "max_completion_tokens": prompt.output_len if max_tokens is None else max_tokens,
        "stream": True,
        "temperature": 0.0,
        "ignore_eos": True,
        "stream_options": {"include_usage": True},
        **EXTRA_BODY,
    }


async def stream_chat(base_url: str, payload: Mapping[str, Any], timeout: float = 300.0) -> RequestTiming:
    """Send one streaming chat request and time its chunks, as bench_serving's sglang-oai-chat client does.

    Like bench_serving, each request gets its own aiohttp session (so its own connection), and the clock starts
    once the session exists.
    """
    timing = RequestTiming(output_len=int(payload["max_completion_tokens"]))
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    async with aiohttp.ClientSession(timeout=client_timeout, read_bufsize=READ_BUFSIZE) as session:
        start = last = time.perf_counter()
        timing.start = start
        try:
            async with session.post(f"{base_url}/v1/chat/completions", json=payload) as response:
                if response.status != 200:
                    timing.error = f"HTTP {response.status}: {(await response.text())[:500]}"
                    return timing
                async for raw in response.content:
                    line = raw.strip()
                    if not line:
                        continue
                    data = line.decode().removeprefix("data: ")
                    timing.latency = time.perf_counter() - start
                    if data == "[DONE]":
                        continue
                    chunk = json.loads(data)
                    if chunk.get("error"):
                        timing.error = f"error in stream: {json.dumps(chunk['error'])[:500]}"
                        return timing
                    usage = chunk.get("usage") or {}
                    timing.output_len = int(usage.get("completion_tokens", timing.output_len))
                    if "prompt_tokens" in usage:
                        timing.prompt_tokens = int(usage["prompt_tokens"])
                    choices = chunk.get("choices") or []
                    if not choices:
                        continue
                    delta = choices[0].get("delta") or {}
                    content = (delta.get("reasoning_content") or delta.get("reasoning") or "") + (
                        delta.get("content") or "")
                    if content:
                        now = time.perf_counter()
                        if timing.ttft == 0.0:
                            timing.ttft = now - start
                        else:
                            timing.itl.append(now - last)
                        last = now
            timing.success = True
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError) as exc:  # ValueError: a chunk that is not JSON
            timing.error = f"{type(exc).__name__}: {exc}"
    return timing


async def run_load(base_url: str, model: str, prompts: Sequence[Prompt], workload: Workload) -> LatencyResult:
    """Warm up, flush the prefix cache, then send ``prompts`` at ``workload.concurrency``; summarize."""
    await warm_up(base_url, model, prompts[0], workload)
    if workload.flush_cache:
        async with aiohttp.ClientSession() as session, session.post(f"{base_url}/flush_cache") as response:
            response.raise_for_status()
    await asyncio.sleep(1.0)

    semaphore = asyncio.Semaphore(workload.concurrency)

    async def limited(prompt: Prompt) -> RequestTiming:
        async with semaphore:
            return await stream_chat(base_url, chat_payload(model, prompt), workload.timeout)

    started = time.perf_counter()
    timings = await asyncio.gather(*(limited(p) for p in prompts))
    return summarize(timings, time.perf_counter() - started, workload)


async def warm_up(base_url: str, model: str, prompt: Prompt, workload: Workload) -> None:
    """bench_serving's warmup: ``workload.warmup_requests`` copies of the first prompt at once, at most 32 tokens."""
    if workload.warmup_requests:
        warm = chat_payload(model, prompt, max_tokens=min(prompt.output_len, 32))
        outcomes = await asyncio.gather(*(stream_chat(base_url, warm, workload.timeout)
                                          for _ in range(workload.warmup_requests)))
        if not any(o.success for o in outcomes):
            raise RuntimeError(f"every warmup request to {base_url} failed; first error: {outcomes[0].error}")


def measure(base_url: str, model: str, tokenizer: Any, workload: Workload) -> LatencyResult:
    """Run ``workload`` against the server at ``base_url`` (its root URL) serving ``model``."""
    prompts = random_ids_prompts(tokenizer, workload.input_len, workload.output_len, workload.num_prompts,
                                 workload.seed)
    return asyncio.run(run_load(base_url, model, prompts, workload))

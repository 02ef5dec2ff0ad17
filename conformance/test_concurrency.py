"""Concurrency: LFM2's short-conv state lives in one slot of sglang's mamba state pool per request, so answers sent
together, and answers on slots that earlier requests wrote, must equal the same requests' answers sent alone.

The requests are every scripted turn the model has (plain answers; tool turns, forced ones included, where it has
tools; images where it sees them: prompts of 12 to a few hundred tokens), each streamed and not. Each distinct
request is sent once alone first, one after the other; then 64 go at once. sglang 0.5.17 hands out the pool's slots
first in first out (mem_cache/allocator/mamba.py:74-91) and the default launch's pool holds 16384 of them
(--max-mamba-cache-size, matrices/micro.toml), so a few hundred requests never get a slot back; /flush_cache resets
the free list to slot 1 without clearing the states (mem_cache/memory_pool.py:1516-1519, allocator/mamba.py:93-96),
so the requests after a flush run on the slots that the requests before it wrote. sglang 0.5.17 holds both fixes
cited (models/lfm2.py:274-301 takes the state slots and has_initial_state from the backend's conv-state metadata).
"""


from __future__ import annotations

import asyncio
from typing import Any

import httpx
import openai
import pytest

from pytest_lfm import answers, checks
from pytest_lfm.matrix import ModelSpec
from pytest_lfm.micro.script import Script

pytestmark = pytest.mark.lfm_requires("chat")

CONCURRENT = 64
CYCLED = 128  # requests through the pool before the flush whose slots the checked batch reuses


def _batch(script: Script, model: ModelSpec, model_name: str) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """CONCURRENT requests cycling through the model's turns, each streamed and not, and a label per request."""
    distinct, labels = [], {}
    for turn in script.for_model(model):
        for stream in (False, True):
            request = turn.request(model_name, stream=True) if stream else turn.request(model_name)
            distinct.append(request)
            labels[answers.key(request)] = f"{turn.id}{' (streamed)' if stream else ''}"
    return [distinct[i % len(distinct)] for i in range(CONCURRENT)], labels


def _check_equal_to_solo(requests: list[dict[str, Any]], got: list[answers.Answer],
                         solo: dict[str, answers.Answer], labels: dict[str, str], when: str) -> None:
    __tracebackhide__ = True
    differ = answers.differing(requests, got, solo, label=lambda r: labels[answers.key(r)])
    checks.check(not differ, f"{len(differ)} of {len(solo)} distinct requests answered differently {when} than alone",
                 request=requests[differ[0]["first"]] if differ else requests[0],
                 expected="every answer equal to the same request's answer sent alone", got=differ)


def test_concurrent_requests_equal_their_solo_answers(
    lfm_client: openai.OpenAI, lfm_async_client: openai.AsyncOpenAI, lfm_model_name: str, lfm_model: ModelSpec,
    lfm_script: Script,
) -> None:
    """sglang #23975 / #24717 (LFM2 conv state read from another request's slot, or not reset): 64 at once, as alone."""
    requests, labels = _batch(lfm_script, lfm_model, lfm_model_name)
    solo = answers.solo_answers(lfm_client, requests)

    async def batch() -> list[answers.Answer]:
        async with lfm_async_client as client:
            return await answers.together(client, requests)

    _check_equal_to_solo(requests, asyncio.run(batch()), solo, labels, f"{CONCURRENT} at once")


def test_requests_on_reused_state_slots_equal_their_solo_answers(
    lfm_client: openai.OpenAI, lfm_async_client: openai.AsyncOpenAI, lfm_http: httpx.Client, lfm_model_name: str,
    lfm_model: ModelSpec, lfm_script: Script,
) -> None:
    """sglang #24717 (a reallocated conv-state slot kept its last request's state): on reused slots, as alone."""
    requests, labels = _batch(lfm_script, lfm_model, lfm_model_name)
    solo = answers.solo_answers(lfm_client, requests)

    async def cycle_then_batch() -> list[answers.Answer]:
        async with lfm_async_client as client:
            answers.flush_cache(lfm_http)  # the slots from 1 on, for the requests that cycle them
            for _ in range(CYCLED // CONCURRENT):
                await answers.together(client, requests)
            answers.flush_cache(lfm_http)  # the checked batch gets the slots the cycling requests wrote
            return await answers.together(client, requests)

    _check_equal_to_solo(requests, asyncio.run(cycle_then_batch()), solo, labels,
                         f"{CONCURRENT} at once on slots {CYCLED} earlier requests used")

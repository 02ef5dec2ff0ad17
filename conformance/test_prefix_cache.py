"""The prefix (radix) cache: LFM2's short-conv state is cached beside the attention KV, and a request that reuses a
cached prefix continues from the cached conv state. It must answer as on a cold cache (after POST /flush_cache).

sglang 0.5.17 caches LFM2 in UnifiedRadixCache with a MAMBA component (the server log: "Tree cache initialized:
impl=UnifiedRadixCache hybrid_ssm=True", docs/gpu-runs/2026-12-01-h200-h/baseurl/server.log), with the "no_buffer"
strategy: LFM2 is not among the architectures with an extra buffer (arg_groups/overrides.py:1432, 1493-1502). A state
is cached at the end of a prompt once it is prefilled and at the end of prompt + answer once the request finishes
(mem_cache/unified_cache/components/mamba_component.py:509); a node split inside a cached span gets no state
(mamba_component.py:296). A request is matched on its prompt less its last token (managers/schedule_batch.py:1367),
so an identical prompt splits the cached prompt one token short of its state and reuses nothing (sglang #22935; the
server log above: the same 12-token prompt three times, "#cached-token: 0" each time); a conversation going on from
a cached answer reuses prompt + answer (the same log: "#new-token: 16, #cached-token: 21", 12 + 9).

The reference without any cache is the run's sgl.Engine, which runs the same launch with --disable-radix-cache
(``matrix.parity_engine_launch``): the default server's repeated and extended prompts must give its greedy tokens.

How many tokens came from the cache: ``usage.prompt_tokens_details.cached_tokens`` only on a server launched with
--enable-cache-report (entrypoints/openai/usage_processor.py:40), which the default launch is not; per request, with
``return_cached_tokens_details: true``, as ``sglext.cached_tokens_details.device`` (entrypoints/openai/protocol.py:777,
serving_chat.py:1753, utils.py:139; left out when nothing was cached), which needs no flag.
"""


from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from pytest_lfm import answers, checks, prompts
from pytest_lfm.matrix import LaunchConfig, ModelSpec
from pytest_lfm.micro.script import Script, Turn
from pytest_lfm.runtime.engine import SglangEngine
from pytest_lfm.settings import Settings

pytestmark = pytest.mark.lfm_requires("chat")

CACHE_REPORT_FLAG = "--enable-cache-report"
EXTENSIONS = ("answer-then-answer", "call-then-result")
GREEDY = {"temperature": 0, "max_new_tokens": 48}


def _repeated_turn(script: Script, model: ModelSpec) -> Turn:
    """The turn to repeat: a tool call where the model has tools (a prompt of a few hundred tokens, beyond the 64-token
    state grid #22935's fix caches states on), else a plain answer."""
    turns = script.for_model(model)
    return next((t for t in turns if t.kind == "call"), next(t for t in turns if t.kind == "answer"))


def _extension(script: Script, model: ModelSpec, name: str, model_name: str, first_answer: str | None = None
               ) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the first request, the request that goes on from it): a plain answer then the next question, or a tool call
    then the scripted turn that answers from its result (whose history is that call)."""
    turns = script.for_model(model)
    if name == "answer-then-answer":
        first, second = [t for t in turns if t.kind == "answer"][:2]
        history = [*first.openai_messages(), {"role": "assistant", "content": first_answer or first.content or ""}]
        return first.request(model_name), second.request(model_name, messages=[*history, *second.openai_messages()])
    for result in (t for t in turns if t.kind == "after_result"):
        for call in (t for t in turns if t.kind == "call" and t.tools == result.tools):
            if tuple(result.messages[:len(call.messages)]) == call.messages:
                return call.request(model_name), result.request(model_name)
    pytest.skip(f"{model.id} has no scripted tool call that a scripted answer from its result goes on from")


def _cached_tokens(response: Any) -> int:
    """sglext.cached_tokens_details.device of a response to a request with return_cached_tokens_details (0 when sglang
    left the details out: nothing was cached)."""
    sglext = (response.model_extra or {}).get("sglext") or {}
    return int((sglext.get("cached_tokens_details") or {}).get("device", 0))


def test_repeated_prompt_answers_as_on_a_cold_cache(
    lfm_client: openai.OpenAI, lfm_http: httpx.Client, lfm_model_name: str, lfm_model: ModelSpec, lfm_script: Script,
) -> None:
    """sglang #22935 (a repeat splits the cached prompt short of its state; its fix caches states inside a prompt)."""
    request = _repeated_turn(lfm_script, lfm_model).request(lfm_model_name)
    answers.flush_cache(lfm_http)
    cold = answers.ask(lfm_client, request)
    warm = [answers.ask(lfm_client, request) for _ in range(2)]
    checks.check(warm == [cold, cold], "a repeated prompt's answers vs its answer on a flushed cache",
                 request=request, expected=cold.as_dict(), got=[a.as_dict() for a in warm])


@pytest.mark.parametrize("extension", EXTENSIONS)
def test_prompt_going_on_from_a_cached_answer_answers_as_on_a_cold_cache(
    lfm_client: openai.OpenAI, lfm_http: httpx.Client, lfm_model_name: str, lfm_model: ModelSpec, lfm_script: Script,
    extension: str,
) -> None:
    """sglang #33450 (a wrong conv/SSM state cached at a prefix; later hits continued from it): warm answers as cold."""
    first, _ = _extension(lfm_script, lfm_model, extension, lfm_model_name)
    answers.flush_cache(lfm_http)
    first_answer = answers.ask(lfm_client, first)  # caches the first prompt and its answer
    _, request = _extension(lfm_script, lfm_model, extension, lfm_model_name, first_answer.content)
    warm = [answers.ask(lfm_client, request) for _ in range(2)]
    answers.flush_cache(lfm_http)
    cold = answers.ask(lfm_client, request)
    checks.check(warm == [cold, cold], "answers going on from a cached prompt and answer vs on a flushed cache",
                 request=request, expected=cold.as_dict(), got=[a.as_dict() for a in warm])


@pytest.mark.xfail(strict=False, reason="sglang 0.5.17: #22935: a repeated prompt is matched one token short of "
                                        "the cached prompt's conv state and reuses nothing (no_buffer strategy)")
def test_repeated_prompt_reports_cached_tokens(
    lfm_client: openai.OpenAI, lfm_http: httpx.Client, lfm_model_name: str, lfm_model: ModelSpec, lfm_script: Script,
) -> None:
    """sglang #22935 (identical prompts stay at 0 cached tokens on the mamba radix cache, open in 0.5.17)."""
    turn = _repeated_turn(lfm_script, lfm_model)
    request = turn.request(lfm_model_name, extra_body={"return_cached_tokens_details": True})
    answers.flush_cache(lfm_http)
    lfm_client.chat.completions.create(**request)
    response = lfm_client.chat.completions.create(**request)
    checks.check(_cached_tokens(response) > 0, "sglext.cached_tokens_details.device of a repeated prompt",
                 request=request, expected="cached tokens > 0", got=response)


def test_prompt_going_on_from_a_cached_answer_reports_its_cached_prefix(
    lfm_client: openai.OpenAI, lfm_http: httpx.Client, lfm_model_name: str, lfm_model: ModelSpec, lfm_script: Script,
) -> None:
    """sglang #16521 (the radix cache keeps the generated tokens: the next turn reuses prompt + answer)."""
    first, _ = _extension(lfm_script, lfm_model, "answer-then-answer", lfm_model_name)
    answers.flush_cache(lfm_http)
    response = lfm_client.chat.completions.create(**first)
    first_answer = checks.only_choice(response, request=first).message.content
    _, going_on = _extension(lfm_script, lfm_model, "answer-then-answer", lfm_model_name, first_answer)
    request = {**going_on, "extra_body": {"return_cached_tokens_details": True}}
    reply = lfm_client.chat.completions.create(**request)
    prompt = response.usage.prompt_tokens if response.usage else 0
    checks.check(_cached_tokens(reply) >= prompt > 0, "sglext.cached_tokens_details.device going on from a cached "
                 "prompt and answer", request=request, expected=f"at least the first prompt's {prompt} tokens",
                 got=reply)


def test_usage_reports_the_cached_prefix_with_enable_cache_report(
    lfm_client: openai.OpenAI, lfm_http: httpx.Client, lfm_model_name: str, lfm_model: ModelSpec, lfm_script: Script,
    lfm_launch: LaunchConfig, lfm_settings: Settings,
) -> None:
    """sglang #16521 (the next turn reuses prompt + answer), as usage.prompt_tokens_details.cached_tokens reports it."""
    if lfm_settings.base_url:
        pytest.skip("the launch arguments of a server started elsewhere are not known here")
    if CACHE_REPORT_FLAG not in lfm_launch.server_args():
        pytest.skip(f"sglang 0.5.17 fills usage.prompt_tokens_details only when launched with {CACHE_REPORT_FLAG} "
                    "(entrypoints/openai/usage_processor.py), which this launch lacks (add it with --lfm-server-arg)")
    first, _ = _extension(lfm_script, lfm_model, "answer-then-answer", lfm_model_name)
    answers.flush_cache(lfm_http)
    response = lfm_client.chat.completions.create(**first)
    first_answer = checks.only_choice(response, request=first).message.content
    _, request = _extension(lfm_script, lfm_model, "answer-then-answer", lfm_model_name, first_answer)
    usage = lfm_client.chat.completions.create(**request).usage
    details = usage.prompt_tokens_details if usage else None
    prompt = response.usage.prompt_tokens if response.usage else 0
    checks.check(details is not None and (details.cached_tokens or 0) >= prompt > 0,
                 "usage.prompt_tokens_details.cached_tokens going on from a cached prompt and answer", request=request,
                 expected=f"at least the first prompt's {prompt} tokens", got=usage)


def _generate(http: httpx.Client, ids: list[int]) -> dict[str, Any]:
    """The server's greedy /generate of ``ids``: its text, output_ids and meta_info."""
    reply: dict[str, Any] = http.post("/generate", json={"input_ids": ids, "sampling_params": GREEDY}).raise_for_status(
        ).json()
    return reply


def _ids(tokenizer_path: str, request: dict[str, Any], sglang_version: str) -> list[int]:
    """The prompt tokens sglang's chat endpoint renders for ``request`` (its messages and tools)."""
    return prompts.prompt_ids(tokenizer_path, request["messages"], request.get("tools"), sglang_version)


@pytest.mark.lfm_live
@pytest.mark.parametrize("case", ["repeated", *EXTENSIONS])
def test_cached_prompt_gives_the_radix_less_engines_greedy_tokens(
    lfm_http: httpx.Client, lfm_engine: SglangEngine, lfm_model_name: str, lfm_model: ModelSpec, lfm_script: Script,
    lfm_tokenizer_path: str, lfm_sglang_version: str, case: str,
) -> None:
    """sglang #36951, #33450 (a wrong short-conv state reused from the radix cache): the server's greedy tokens for a
    prompt sent three times from a flushed cache, or going on from a cached prompt and answer (twice), equal those of
    the engine without a radix cache on the same prompt tokens."""
    answers.flush_cache(lfm_http)
    if case == "repeated":
        ids = _ids(lfm_tokenizer_path, _repeated_turn(lfm_script, lfm_model).request(lfm_model_name),
                   lfm_sglang_version)
        runs = [_generate(lfm_http, ids) for _ in range(3)]
    else:
        first, _ = _extension(lfm_script, lfm_model, case, lfm_model_name)
        first_answer = _generate(lfm_http, _ids(lfm_tokenizer_path, first, lfm_sglang_version))["text"]
        _, going_on = _extension(lfm_script, lfm_model, case, lfm_model_name, first_answer)
        ids = _ids(lfm_tokenizer_path, going_on, lfm_sglang_version)
        runs = [_generate(lfm_http, ids) for _ in range(2)]
    want = lfm_engine.generate(input_ids=ids, sampling_params=GREEDY)
    got = [(r["output_ids"], r["meta_info"].get("cached_tokens")) for r in runs]
    checks.check(all(r["output_ids"] == want["output_ids"] for r in runs),
                 f"greedy tokens of a {case} prompt on the server (prefix cache) vs the engine without a radix cache",
                 request={"input_ids": ids, "sampling_params": GREEDY},
                 expected=f"{want['output_ids']} ({want['text']!r})",
                 got=f"(output_ids, cached_tokens) per run: {got} ({[r['text'] for r in runs]!r})")

"""Tool calling with ``--tool-call-parser lfm2``: auto, none, required and named choices, parallel and JSON-form
calls, answers after tool results, streaming assembly, and the prompt the tools become."""

from __future__ import annotations

from typing import Any

import openai
import pytest

from pytest_lfm import checks
from pytest_lfm.matrix import ModelSpec
from pytest_lfm.micro.script import Turn, load_script

pytestmark = pytest.mark.lfm_requires("tools")

CALLS = checks.scripted("call", "parallel", "json_call")
AUTO_CALLS = checks.scripted("call")
PARALLEL = checks.scripted("parallel")
JSON_CALLS = checks.scripted("json_call")
REQUIRED = [t.id for t in load_script().turns if t.kind == "forced" and t.tool_choice == "required"]
NAMED = [t.id for t in load_script().turns if t.kind == "forced" and isinstance(t.tool_choice, dict)]
AFTER_RESULT = checks.scripted("after_result")
NO_TOOL = checks.scripted("no_tool")


def _create(client: openai.OpenAI, request: dict[str, Any]) -> Any:
    return client.chat.completions.create(**request)


def _choice(client: openai.OpenAI, request: dict[str, Any]) -> Any:
    __tracebackhide__ = True
    return checks.only_choice(_create(client, request), request=request)


def _stream(client: openai.OpenAI, request: dict[str, Any]) -> checks.StreamedChoice:
    return checks.assemble_stream(client.chat.completions.create(**request, stream=True)).only_choice()


# ---------------------------------------------------------------- auto


@pytest.mark.parametrize("turn", CALLS, indirect=True)
def test_call_never_vanishes(lfm_client: openai.OpenAI, lfm_model_name: str, turn: Turn) -> None:
    """Seen on the GPU host (docs/facts.md): a call came back as content '' + tool_calls null + finish 'stop'."""
    request = turn.request(lfm_model_name)
    choice = _choice(lfm_client, request)
    checks.assert_call_not_vanished(choice.finish_reason, choice.message.content, choice.message.tool_calls,
                                    request=request, response=choice)


@pytest.mark.parametrize("turn", CALLS, indirect=True)
def test_call_names_the_scripted_tools(lfm_client: openai.OpenAI, lfm_model_name: str, turn: Turn) -> None:
    """Liquid's SGLang page (tool calling with --tool-call-parser lfm2); the script names the tools to call."""
    request = turn.request(lfm_model_name)
    message = _choice(lfm_client, request).message
    got = [c["name"] for c in checks.tool_call_dicts(message.tool_calls)]
    checks.check(got == [c["name"] for c in turn.tool_calls], "called tools", request=request,
                 expected=[c["name"] for c in turn.tool_calls], got=message)


@pytest.mark.parametrize("turn", CALLS, indirect=True)
def test_call_arguments_match_the_tool_schema(lfm_client: openai.OpenAI, lfm_model_name: str, turn: Turn) -> None:
    """OpenAI function calling: arguments are a JSON object valid against the tool's parameters (jsonschema)."""
    request = turn.request(lfm_model_name)
    checks.assert_calls_valid(_choice(lfm_client, request).message.tool_calls, turn.tools, request=request)


@pytest.mark.parametrize("turn", CALLS, indirect=True)
def test_call_arguments_are_the_scripted_ones(
    lfm_client: openai.OpenAI, lfm_model_name: str, lfm_model: ModelSpec, turn: Turn
) -> None:
    """The script: micro checkpoints call with exactly these arguments (docs/facts.md: 35/35 on sglang 0.5.17)."""
    if not checks.exact(lfm_model):
        pytest.skip("exact arguments are known for micro checkpoints only; real models are checked on structure")
    request = turn.request(lfm_model_name)
    got = checks.tool_call_dicts(_choice(lfm_client, request).message.tool_calls)
    checks.assert_calls_equal(got, turn.tool_calls, request=request)


@pytest.mark.parametrize("turn", CALLS, indirect=True)
def test_call_finishes_with_tool_calls(lfm_client: openai.OpenAI, lfm_model_name: str, turn: Turn) -> None:
    """OpenAI function calling: finish_reason 'tool_calls' when the message holds calls."""
    request = turn.request(lfm_model_name)
    checks.assert_finish_reason(_choice(lfm_client, request), "tool_calls", request=request)


@pytest.mark.parametrize("turn", CALLS, indirect=True)
def test_call_leaves_no_call_text_in_content(lfm_client: openai.OpenAI, lfm_model_name: str, turn: Turn) -> None:
    """vLLM #39243 (the bug an lfm2 parser exists to fix): call markup must not stay in content."""
    request = turn.request(lfm_model_name)
    message = _choice(lfm_client, request).message
    checks.assert_no_special_tokens(message.content, request=request)
    leftovers = [c["name"] for c in turn.tool_calls if f"{c['name']}(" in (message.content or "")]
    checks.check(not leftovers, "pythonic call text in content", request=request,
                 expected="content without the calls", got=message)


@pytest.mark.parametrize("turn", NO_TOOL, indirect=True)
def test_model_may_answer_in_text_when_tools_are_offered(
    lfm_client: openai.OpenAI, lfm_model_name: str, lfm_model: ModelSpec, turn: Turn
) -> None:
    """OpenAI function calling (tool_choice auto / none): an answer without calls finishes with 'stop'."""
    request = turn.request(lfm_model_name)
    choice = _choice(lfm_client, request)
    checks.check(not choice.message.tool_calls and choice.finish_reason == "stop" and bool(choice.message.content),
                 "a text answer", request=request, expected="content, no tool_calls, finish 'stop'", got=choice)
    if checks.exact(lfm_model):
        checks.check(choice.message.content == turn.content, "answer", request=request, expected=turn.content,
                     got=choice.message.content)


# ---------------------------------------------------------------- required / named / rejected


@pytest.mark.parametrize("turn", REQUIRED, indirect=True)
def test_tool_choice_required_returns_valid_calls(
    lfm_client: openai.OpenAI, lfm_model_name: str, lfm_model: ModelSpec, turn: Turn
) -> None:
    """docs/facts.md: tool_choice 'required' is enforced by a JSON-schema grammar; the calls come back parsed."""
    request = turn.request(lfm_model_name)
    checks.assert_scripted_calls(_choice(lfm_client, request), turn, lfm_model, request=request)


@pytest.mark.parametrize("turn", NAMED, indirect=True)
def test_named_tool_choice_calls_only_that_tool(
    lfm_client: openai.OpenAI, lfm_model_name: str, lfm_model: ModelSpec, turn: Turn
) -> None:
    """OpenAI function calling (tool_choice {"type": "function", ...}); enforced by a JSON-schema grammar
    (docs/facts.md)."""
    request = turn.request(lfm_model_name)
    assert isinstance(turn.tool_choice, dict)
    named = turn.tool_choice["function"]["name"]
    calls = checks.assert_calls_valid(_choice(lfm_client, request).message.tool_calls, turn.tools, request=request)
    checks.check({c["name"] for c in calls} == {named}, "called tools", request=request, expected=named, got=calls)
    if checks.exact(lfm_model):
        checks.assert_calls_equal(calls, turn.tool_calls, request=request)


@pytest.mark.parametrize("turn", NAMED[:1], indirect=True)
def test_unknown_named_tool_is_rejected_with_400(lfm_client: openai.OpenAI, lfm_model_name: str, turn: Turn) -> None:
    """docs/facts.md: HTTP 400 "Tool 'nope' not found in tools list." (sglang serving_chat validation)."""
    request = turn.request(lfm_model_name, tool_choice={"type": "function", "function": {"name": "nope"}})
    checks.expect_http_error(lambda: _create(lfm_client, request), 400, request=request,
                             mentions="Tool 'nope' not found in tools list.")


@pytest.mark.parametrize("turn", AUTO_CALLS[:1], indirect=True)
def test_invalid_parameters_schema_is_rejected_with_400(
    lfm_client: openai.OpenAI, lfm_model_name: str, turn: Turn
) -> None:
    """sglang serving_chat: tool parameters are checked with Draft202012Validator.check_schema -> HTTP 400."""
    tool = {"type": "function", "function": {"name": "broken", "description": "A tool with a broken schema.",
                                             "parameters": {"type": "object", "required": "location"}}}
    request = turn.request(lfm_model_name, tools=[*turn.tools, tool])
    checks.expect_http_error(lambda: _create(lfm_client, request), 400, request=request,
                             mentions="invalid 'parameters' schema")


# ---------------------------------------------------------------- parallel, JSON form, results


@pytest.mark.parametrize("turn", PARALLEL, indirect=True)
def test_parallel_calls_have_distinct_ids_and_indexes(
    lfm_client: openai.OpenAI, lfm_model_name: str, turn: Turn
) -> None:
    """OpenAI function calling (parallel calls): each call has its own id; sglang also numbers them 0..n-1."""
    request = turn.request(lfm_model_name)
    calls = _choice(lfm_client, request).message.tool_calls or []
    ids = [c.id for c in calls]
    indexes = [getattr(c, "index", None) for c in calls]
    checks.check(len(calls) == len(turn.tool_calls) and len(set(ids)) == len(ids)
                 and indexes in ([None] * len(calls), list(range(len(calls)))),
                 "parallel calls", request=request,
                 expected=f"{len(turn.tool_calls)} calls with distinct ids (indexes 0..n-1 if given)", got=calls)


@pytest.mark.parametrize("turn", PARALLEL, indirect=True)
def test_streamed_parallel_calls_have_indexes_from_zero(
    lfm_client: openai.OpenAI, lfm_model_name: str, turn: Turn
) -> None:
    """OpenAI streaming: tool_calls[].index is the call's position (sglang #40291: indexes restart per block)."""
    request = turn.request(lfm_model_name)
    choice = _stream(lfm_client, request)
    checks.check(sorted(choice.calls) == list(range(len(turn.tool_calls))), "indexes of streamed calls",
                 request={**request, "stream": True}, expected=list(range(len(turn.tool_calls))),
                 got={i: c.as_dict() for i, c in choice.calls.items()})


@pytest.mark.parametrize("turn", JSON_CALLS, indirect=True)
def test_json_form_calls_are_parsed_into_tool_calls(
    lfm_client: openai.OpenAI, lfm_model_name: str, lfm_model: ModelSpec, turn: Turn
) -> None:
    """Liquid's LFM2 model card: "Output function calls as JSON" in the system prompt gives JSON calls, which
    sglang's Lfm2Detector accepts."""
    request = turn.request(lfm_model_name)
    checks.assert_scripted_calls(_choice(lfm_client, request), turn, lfm_model, request=request)


@pytest.mark.parametrize("turn", AFTER_RESULT, indirect=True)
def test_answer_after_a_tool_result_is_text(
    lfm_client: openai.OpenAI, lfm_model_name: str, lfm_model: ModelSpec, turn: Turn
) -> None:
    """LFM2 chat template (tool results between <|tool_response_start|> and <|tool_response_end|>): the model
    answers from the result."""
    request = turn.request(lfm_model_name)
    choice = _choice(lfm_client, request)
    checks.check(not choice.message.tool_calls and choice.finish_reason == "stop" and bool(choice.message.content),
                 "answer after a tool result", request=request, expected="content, no tool_calls, finish 'stop'",
                 got=choice)
    checks.assert_no_special_tokens(choice.message.content, request=request)
    if checks.exact(lfm_model):
        checks.check(choice.message.content == turn.content, "answer", request=request, expected=turn.content,
                     got=choice.message.content)


# ---------------------------------------------------------------- the prompt


@pytest.mark.parametrize("turn", AUTO_CALLS[:1], indirect=True)
def test_tools_reach_the_prompt(lfm_client: openai.OpenAI, lfm_model_name: str, turn: Turn) -> None:
    """LFM2 chat template: tools are listed in the system prompt, so prompt_tokens grows with them."""
    with_tools = turn.request(lfm_model_name, max_tokens=1)
    without = {k: v for k, v in with_tools.items() if k not in ("tools", "tool_choice")}
    counts = [_create(lfm_client, r).usage.prompt_tokens for r in (without, with_tools)]
    checks.check(counts[1] > counts[0], "prompt_tokens without vs with tools", request=with_tools,
                 expected="more prompt tokens with tools", got=counts)


@pytest.mark.parametrize("turn", AUTO_CALLS[:1], indirect=True)
def test_prompt_tokens_count_the_tools_as_the_running_sglang_renders_them(
    request: pytest.FixtureRequest, lfm_client: openai.OpenAI, lfm_model_name: str, lfm_model: ModelSpec,
    lfm_sglang_version: str, turn: Turn,
) -> None:
    """docs/facts.md: sglang re-serializes tools before the chat template (0.5.17: 257 tokens where the
    client's JSON gives 227); prompt_tokens must equal that rendering."""
    checks.check_prompt_tokens(request, lfm_client, turn.request(lfm_model_name, max_tokens=1), turn, lfm_model,
                               lfm_sglang_version, "the tools")


# ---------------------------------------------------------------- streaming


@pytest.mark.parametrize("turn", CALLS, indirect=True)
def test_streamed_calls_have_one_id_and_one_name_each(
    lfm_client: openai.OpenAI, lfm_model_name: str, turn: Turn
) -> None:
    """OpenAI streaming: a call's first delta carries its id and name, later deltas only arguments."""
    request = turn.request(lfm_model_name)
    choice = _stream(lfm_client, request)
    got = {i: (c.ids, c.names) for i, c in choice.calls.items()}
    checks.check(bool(got) and all(len(ids) == 1 and len(names) == 1 for ids, names in got.values()),
                 "ids and names per streamed call", request={**request, "stream": True},
                 expected="one id and one name per call index", got=got)


@pytest.mark.parametrize("turn", CALLS, indirect=True)
def test_streamed_calls_equal_the_non_streamed_calls(
    lfm_client: openai.OpenAI, lfm_model_name: str, turn: Turn
) -> None:
    """OpenAI streaming: the assembled calls (arguments compared as JSON values) equal the non-streamed ones, and
    there are calls to compare (the turn asks for them: two empty answers are not equal calls)."""
    request = turn.request(lfm_model_name)
    whole = checks.tool_call_dicts(_choice(lfm_client, request).message.tool_calls)
    checks.check(bool(whole), "the non-streamed answer has the calls the turn asks for", request=request,
                 expected=f"{len(turn.tool_calls)} call(s)", got=whole)
    streamed = _stream(lfm_client, request)
    checks.assert_calls_equal(streamed.call_dicts(), whole, request={**request, "stream": True})


@pytest.mark.parametrize("turn", CALLS, indirect=True)
def test_streamed_call_finishes_with_tool_calls(lfm_client: openai.OpenAI, lfm_model_name: str, turn: Turn) -> None:
    """docs/facts.md: the last chunk of a streamed call has finish_reason 'tool_calls'."""
    request = turn.request(lfm_model_name)
    choice = _stream(lfm_client, request)
    checks.check(choice.finish_reasons == ["tool_calls"], "finish chunks of a streamed call",
                 request={**request, "stream": True}, expected=["tool_calls"], got=choice.finish_reasons)


@pytest.mark.parametrize("turn", CALLS, indirect=True)
def test_streamed_call_never_vanishes(lfm_client: openai.OpenAI, lfm_model_name: str, turn: Turn) -> None:
    """Seen on the GPU host (docs/facts.md): a call must not end as an empty 'stop' (streamed)."""
    request = turn.request(lfm_model_name)
    choice = _stream(lfm_client, request)
    checks.assert_call_not_vanished(choice.finish_reason, choice.content, list(choice.calls.values()),
                                    request={**request, "stream": True}, response=choice)

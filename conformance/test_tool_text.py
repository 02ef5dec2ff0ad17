"""Text around tool calls and several call blocks in one answer, through ``--tool-call-parser lfm2``.

LFM2.5 may write text before, between and after its call blocks, and a turn may hold several blocks (Liquid's model
cards; pytest_lfm/micro/script.json's ``call_text`` turns, which the micro checkpoints are trained on). The parser
must keep every text part as content and every block's calls as distinct calls, streamed and not. Known upstream
bugs are xfail(strict=False) naming the issue, so a fixed sglang shows up as XPASS; conformance/parser_corpus.json
holds the same outputs for the parser alone. The streamed block checks run on the model's own launch (a delta per
token) and on the float16 variant, which streams STREAM_INTERVAL tokens per chunk (``matrix.STREAM_INTERVAL``): there
the end of one block and the start of the next reach the parser in one delta.
"""

from __future__ import annotations

from typing import Any

import openai
import pytest

from pytest_lfm import checks
from pytest_lfm.matrix import FLOAT16_VARIANT, ModelSpec
from pytest_lfm.micro.script import Turn, load_script

pytestmark = pytest.mark.lfm_requires("tools")

DROPS_TEXT_AFTER_A_CALL = pytest.mark.xfail(strict=False, reason=(
    "sglang #40295 (open; seen with sglang 0.5.17 and 0.5.23): Lfm2Detector.detect_and_parse keeps only the text "
    "before the first <|tool_call_start|>; text between and after blocks is dropped"))
INDEXES_EVERY_BLOCK_FROM_ZERO = pytest.mark.xfail(strict=False, reason=(
    "sglang #40291 (open; seen with sglang 0.5.17 and 0.5.23): streamed pythonic calls restart their index at 0 in "
    "every call block, so a client merges the calls of the second block into the first"))


def _turns(*, marks_if: Any = None, mark: Any = None, where: Any = None) -> list[Any]:
    out = []
    for turn in load_script().turns:
        if turn.kind != "call_text" or (where is not None and not where(turn)):
            continue
        marks = [mark] if marks_if is not None and marks_if(turn) else []
        out.append(pytest.param(turn.id, marks=marks, id=turn.id))
    return out


def _text_after_a_block(turn: Turn) -> bool:
    first_block = next(i for i, p in enumerate(turn.parts) if "calls" in p)
    return any("text" in p for p in turn.parts[first_block + 1:])


def _exact_or_skip(model: ModelSpec) -> None:
    if not checks.exact(model):
        pytest.skip("the text and calls of a turn are known for micro checkpoints only")


def _in_order(texts: list[str], content: str) -> bool:
    """Every text part occurs in ``content``, in order (the parser may strip or join the whitespace around them)."""
    at = 0
    for text in texts:
        found = content.find(text.strip(), at)
        if found < 0:
            return False
        at = found + len(text.strip())
    return True


@pytest.mark.parametrize("turn", _turns(where=lambda t: bool(t.texts), marks_if=_text_after_a_block,
                                        mark=DROPS_TEXT_AFTER_A_CALL), indirect=True)
def test_text_around_calls_is_kept_as_content(
    lfm_client: openai.OpenAI, lfm_model_name: str, lfm_model: ModelSpec, turn: Turn
) -> None:
    """sglang #40295: text before, between and after call blocks is content, in order (not streamed)."""
    _exact_or_skip(lfm_model)
    request = turn.request(lfm_model_name)
    choice = checks.only_choice(lfm_client.chat.completions.create(**request), request=request)
    checks.check(_in_order(turn.texts, choice.message.content or ""), "text parts kept as content", request=request,
                 expected=turn.texts, got=choice.message)


@pytest.mark.parametrize("turn", _turns(where=lambda t: bool(t.texts)), indirect=True)
def test_streamed_text_around_calls_is_kept_as_content(
    lfm_client: openai.OpenAI, lfm_model_name: str, lfm_model: ModelSpec, turn: Turn
) -> None:
    """sglang #40295 / #40291: streamed, text before, between and after call blocks is content, in order."""
    _exact_or_skip(lfm_model)
    request = turn.request(lfm_model_name)
    stream = checks.assemble_stream(lfm_client.chat.completions.create(**request, stream=True))
    choice = stream.only_choice()
    checks.check(_in_order(turn.texts, choice.content), "streamed text parts kept as content", request=request,
                 expected=turn.texts, got=stream.chunks)


@pytest.mark.parametrize("turn", _turns(), indirect=True)
def test_every_block_gives_its_calls(
    lfm_client: openai.OpenAI, lfm_model_name: str, lfm_model: ModelSpec, turn: Turn
) -> None:
    """sglang #40291 / Liquid's LFM2 format: each call block's calls, in order, unmerged (not streamed)."""
    _exact_or_skip(lfm_model)
    request = turn.request(lfm_model_name)
    choice = checks.only_choice(lfm_client.chat.completions.create(**request), request=request)
    checks.assert_calls_equal(checks.tool_call_dicts(choice.message.tool_calls), turn.tool_calls, request=request)
    checks.assert_finish_reason(choice, "tool_calls", request=request)


@pytest.mark.lfm_launch()
@pytest.mark.lfm_launch(**FLOAT16_VARIANT)
@pytest.mark.parametrize("turn", _turns(marks_if=lambda t: len(t.blocks) > 1, mark=INDEXES_EVERY_BLOCK_FROM_ZERO),
                         indirect=True)
def test_streamed_blocks_keep_distinct_indexes_and_arguments(
    lfm_client: openai.OpenAI, lfm_model_name: str, lfm_model: ModelSpec, turn: Turn
) -> None:
    """sglang #40291: streamed, every call of every block has its own index, name and unmerged arguments (also in
    chunks of several tokens: FLOAT16_VARIANT's --stream-interval)."""
    _exact_or_skip(lfm_model)
    request = turn.request(lfm_model_name)
    stream = checks.assemble_stream(lfm_client.chat.completions.create(**request, stream=True))
    calls = [c.as_dict() for _, c in sorted(stream.only_choice().calls.items())]
    checks.check(len(calls) == len(turn.tool_calls), "streamed calls, one index each", request=request,
                 expected=[dict(c) for c in turn.tool_calls], got=stream.chunks)
    checks.assert_calls_equal(calls, turn.tool_calls, request=request)


@pytest.mark.lfm_launch()
@pytest.mark.lfm_launch(**FLOAT16_VARIANT)
@pytest.mark.parametrize("turn", _turns(marks_if=lambda t: len(t.blocks) > 1, mark=INDEXES_EVERY_BLOCK_FROM_ZERO),
                         indirect=True)
def test_streamed_blocks_equal_the_non_streamed_calls(
    lfm_client: openai.OpenAI, lfm_model_name: str, turn: Turn
) -> None:
    """sglang #40291 / OpenAI streaming: the calls assembled by index equal the non-streamed answer's, which has
    calls to compare (two empty answers are not equal calls), one token per chunk and in chunks of several."""
    request = turn.request(lfm_model_name)
    whole = checks.tool_call_dicts(checks.only_choice(lfm_client.chat.completions.create(**request),
                                                      request=request).message.tool_calls)
    checks.check(bool(whole), "the non-streamed answer has the calls the turn asks for", request=request,
                 expected=f"{len(turn.tool_calls)} call(s)", got=whole)
    stream = checks.assemble_stream(lfm_client.chat.completions.create(**request, stream=True))
    checks.assert_calls_equal(stream.only_choice().call_dicts(), whole, request={**request, "stream": True})

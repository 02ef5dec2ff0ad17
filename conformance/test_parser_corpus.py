"""Golden LFM2 outputs through the installed sglang's lfm2 tool-call parser, whole and streamed in chunks (CPU).

The expected parse of each output comes from the LFM2 format (parser_corpus.json names the source of each case),
not from what the parser does today. Known upstream bugs are xfail(strict=False) with the issue in the reason, so
an sglang upgrade that fixes one shows up as XPASS. A bug the corpus records as fixed (``fixed_in``) is xfailed only
below that sglang release (importlib.metadata's version of sglang).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from pytest_lfm.checks import StreamedCall, assert_calls_equal, assert_content_equal, check, known_failure_marks

pytest.importorskip(
    "sglang.srt.function_call.lfm2_detector",
    reason="sglang's Lfm2Detector cannot be imported here; the parser corpus runs wherever sglang imports",
)

from sglang.srt.entrypoints.openai.protocol import Tool
from sglang.srt.function_call.function_call_parser import FunctionCallParser
from sglang.srt.function_call.lfm2_detector import Lfm2Detector

CORPUS = json.loads((Path(__file__).parent / "parser_corpus.json").read_text(encoding="utf-8"))
CHUNK_SIZES = (1, 2, 3, 4, 5, 7, 11, 17, 0)  # 0: the whole output in one increment
SGLANG = metadata.version("sglang")


@dataclass(frozen=True)
class Case:
    id: str
    source: str
    output: str
    content: str
    calls: tuple[dict[str, Any], ...]
    xfail: dict[str, Any]


CASES = [Case(c["id"], c["source"], c["output"], c["content"], tuple(c["calls"]), c.get("xfail", {}))
         for c in CORPUS["cases"]]


def _xfail(case: Case, check: str, size: int | None, sglang: str = SGLANG) -> list[pytest.MarkDecorator]:
    return known_failure_marks(case.xfail.get(check), size, sglang)


def _params(check: str, *, streamed: bool, only_calls: bool = False) -> list[Any]:
    params = []
    for case in CASES:
        if only_calls and not case.calls:
            continue
        if not streamed:
            params.append(pytest.param(case, marks=_xfail(case, check, None), id=case.id))
            continue
        for size in CHUNK_SIZES:
            name = f"{case.id}-chunk{size}" if size else f"{case.id}-one"
            params.append(pytest.param(case, size, marks=_xfail(case, check, size), id=name))
    return params


def _parser() -> FunctionCallParser:
    parser = FunctionCallParser([Tool(**tool) for tool in CORPUS["tools"]], "lfm2")
    assert isinstance(parser.detector, Lfm2Detector)
    return parser


def _chunks(text: str, size: int) -> list[str]:
    return [text] if size == 0 else [text[i:i + size] for i in range(0, len(text), size)]


def _stream(output: str, size: int) -> tuple[str, list[StreamedCall], list[int]]:
    """What a client assembles from sglang's stream: content deltas joined, call deltas merged by index, and the
    index of each call delta that starts a call (carries a name)."""
    parser = _parser()
    content: list[str] = []
    calls: dict[int, StreamedCall] = {}
    items = []
    for chunk in _chunks(output, size):
        text, found = parser.parse_stream_chunk(chunk)
        content.append(text)
        items.extend(found)
    if hasattr(parser, "parse_stream_end"):  # sglang >= 0.5.2x flushes held-back text at the end
        text, found = parser.parse_stream_end()
        content.append(text)
        items.extend(found)
    for item in items:
        call = calls.setdefault(item.tool_index, StreamedCall(index=item.tool_index))
        call.add(name=item.name, arguments=item.parameters)
    starts = [item.tool_index for item in items if item.name]
    return "".join(content), [calls[i] for i in sorted(calls)], starts


def _request(case: Case, mode: str) -> str:
    return f"lfm2 parser ({mode}) on {case.output!r} [{case.source}]"


@pytest.mark.parametrize("case", _params("nonstream", streamed=False))
def test_whole_output_parses_to_the_calls_and_content_of_the_format(case: Case) -> None:
    """LFM2 format (Liquid's model cards) via sglang's non-streaming parse; each case names its source."""
    content, items = _parser().parse_non_stream(case.output)
    got = [{"name": item.name, "arguments": item.parameters} for item in items]
    assert_calls_equal(got, case.calls, request=_request(case, "non-streaming"))
    assert_content_equal(content, case.content, request=_request(case, "non-streaming"))


@pytest.mark.parametrize(("case", "size"), _params("stream", streamed=True))
def test_streamed_output_assembles_to_the_calls_and_content_of_the_format(case: Case, size: int) -> None:
    """LFM2 format (Liquid's model cards) via sglang's streaming parse, as a client assembles it by call index."""
    content, calls, _ = _stream(case.output, size)
    request = _request(case, f"streamed in {size or len(case.output)}-char chunks")
    assert_calls_equal([c.as_dict() for c in calls], case.calls, request=request)
    assert_content_equal(content, case.content, request=request)


@pytest.mark.parametrize(("case", "size"), _params("index", streamed=True, only_calls=True))
def test_streamed_calls_are_indexed_in_call_order_from_zero(case: Case, size: int) -> None:
    """OpenAI streaming: tool_calls[].index is the call's position in the message (sglang #40291)."""
    _, _, starts = _stream(case.output, size)
    check(starts == list(range(len(starts))), "indexes of the streamed calls, in the order they start",
          request=_request(case, f"streamed in {size or len(case.output)}-char chunks"),
          expected=list(range(len(starts))), got=starts)

"""What a chat request answered, for comparing one request's answers: sent alone and among others, on a cold and on a
warm cache, on two servers of one model.

An :class:`Answer` is what a client acts on (text, calls with their arguments as JSON values, finish reason); call ids
are left out (sglang makes them up per response). :class:`Greedy` adds the tokens with their runner-ups, for answers
that may part at a near-tie (an off-script prompt on two differently compiled servers). :func:`flush_cache` empties
sglang's prefix cache for a cold comparison and checks sglang's reply.

Identical requests sent together are compared with their one solo answer, so a check's verdict does not depend on
which of them got which response (replay answers identical requests in the order they were sent:
``recording.store``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import httpx
import openai

from pytest_lfm import checks

FLUSHED = "Cache flushed."
"""How sglang's reply to a flush it performed begins (0.5.17 entrypoints/http_server.py:946-961: HTTP 200 with
"Cache flushed.\\nPlease check backend logs ..."; a flush it did not perform is HTTP 400 with the reason)."""
FLUSH_WAIT_S = 30
"""``/flush_cache?timeout=``: how long sglang waits for running requests to finish before flushing (0.5.17
managers/scheduler_components/flush_wrapper.py:31-38); without it a flush right after a batch may find a request still
being finished and refuse."""


@dataclass(frozen=True)
class Answer:
    """What a client acts on: the text, the calls (name, arguments as canonical JSON) and the finish reason."""

    content: str
    calls: tuple[tuple[str, str], ...]
    finish_reason: str | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _canonical(arguments: Any) -> str:
    if isinstance(arguments, str):
        try:
            return json.dumps(json.loads(arguments), sort_keys=True, ensure_ascii=False)
        except json.JSONDecodeError:
            return arguments
    return json.dumps(arguments, sort_keys=True, ensure_ascii=False)


def _answer(content: str | None, calls: Sequence[Mapping[str, Any]], finish_reason: str | None) -> Answer:
    return Answer(content or "", tuple((c["name"], _canonical(c["arguments"])) for c in calls), finish_reason)


def answer_of(response: Any) -> Answer:
    """The answer of a non-streamed response's first choice (no choice: an empty answer without finish reason)."""
    if not response.choices:
        return Answer("", (), None)
    choice = response.choices[0]
    return _answer(choice.message.content, checks.tool_call_dicts(choice.message.tool_calls), choice.finish_reason)


def streamed_answer(stream: checks.Stream) -> Answer:
    """The answer of an assembled stream's first choice."""
    if not stream.choices:
        return Answer("", (), None)
    choice = stream.choices[min(stream.choices)]
    return _answer(choice.content, choice.call_dicts(), choice.finish_reason)


def ask(client: openai.OpenAI, request: Mapping[str, Any]) -> Answer:
    """Send one request (streamed when it says ``stream: True``) and return its answer."""
    if request.get("stream"):
        return streamed_answer(checks.assemble_stream(client.chat.completions.create(**request)))
    return answer_of(client.chat.completions.create(**request))


async def ask_async(client: openai.AsyncOpenAI, request: Mapping[str, Any]) -> Answer:
    """The async twin of :func:`ask`."""
    if request.get("stream"):
        stream = await client.chat.completions.create(**request)
        return streamed_answer(checks.assemble_stream([chunk async for chunk in stream]))
    return answer_of(await client.chat.completions.create(**request))


async def together(client: openai.AsyncOpenAI, requests: Sequence[Mapping[str, Any]]) -> list[Answer]:
    """Send every request at once; their answers, in request order."""
    return list(await asyncio.gather(*(ask_async(client, r) for r in requests)))


def key(request: Mapping[str, Any]) -> str:
    """A request's identity: its canonical JSON."""
    return json.dumps(request, sort_keys=True, ensure_ascii=False, default=str)


def solo_answers(client: openai.OpenAI, requests: Sequence[Mapping[str, Any]]) -> dict[str, Answer]:
    """Each distinct request sent once, alone, one after the other in order of first appearance, by :func:`key`."""
    answers: dict[str, Answer] = {}
    for request in requests:
        if key(request) not in answers:
            answers[key(request)] = ask(client, request)
    return answers


def differing(requests: Sequence[Mapping[str, Any]], answers: Sequence[Answer], solo: Mapping[str, Answer],
              label: Any = None) -> list[dict[str, Any]]:
    """The distinct requests some of whose answers differ from their solo answer: per request its label (``label(
    request)``, else its index), the index of its first appearance, how many of its answers differ, the solo answer
    and the distinct differing answers, in a fixed order (whichever identical request got which response)."""
    groups: dict[str, list[Answer]] = {}
    firsts: dict[str, int] = {}
    for index, (request, answer) in enumerate(zip(requests, answers, strict=True)):
        groups.setdefault(key(request), []).append(answer)
        firsts.setdefault(key(request), index)
    out = []
    for k, got in groups.items():
        wrong = [a for a in got if a != solo[k]]
        if wrong:
            request = requests[firsts[k]]
            out.append({"request": label(request) if label else firsts[k], "first": firsts[k],
                        "differ": f"{len(wrong)} of {len(got)}", "solo": solo[k].as_dict(),
                        "together": [a.as_dict() for a in sorted(set(wrong), key=lambda a: json.dumps(a.as_dict()))]})
    return sorted(out, key=lambda entry: json.dumps(entry["request"], default=str))


# ---------------------------------------------------------------- greedy tokens


@dataclass(frozen=True)
class Greedy:
    """A greedy answer's tokens with each position's top alternatives (token -> logprob)."""

    text: str
    finish_reason: str | None
    tokens: tuple[str, ...]
    alternatives: tuple[dict[str, float], ...]


def greedy_of(response: Any) -> Greedy:
    """The greedy tokens of a response requested with ``logprobs`` and ``top_logprobs`` >= 2."""
    choice = response.choices[0]
    entries = choice.logprobs.content if choice.logprobs and choice.logprobs.content else []
    return Greedy(choice.message.content or "", choice.finish_reason, tuple(e.token for e in entries),
                  tuple({t.token: t.logprob for t in e.top_logprobs} for e in entries))


def parting(a: Greedy, b: Greedy, near_tie: float) -> str | None:
    """None when ``a`` and ``b`` are the same answer, or part where each one's token is the other's runner-up within
    ``near_tie`` nats (a tie rounding decides); else where and how they part."""
    shared = 0
    while shared < min(len(a.tokens), len(b.tokens)) and a.tokens[shared] == b.tokens[shared]:
        shared += 1
    if shared == len(a.tokens) == len(b.tokens):
        return None if a.finish_reason == b.finish_reason else (
            f"the same {shared} tokens, finished {a.finish_reason!r} and {b.finish_reason!r}")
    if shared == min(len(a.tokens), len(b.tokens)):
        return f"one answer ends after the {shared} tokens they share, the other goes on"
    ta, tb, alt_a, alt_b = a.tokens[shared], b.tokens[shared], a.alternatives[shared], b.alternatives[shared]
    gap_a = alt_a[ta] - alt_a[tb] if ta in alt_a and tb in alt_a else None
    gap_b = alt_b[tb] - alt_b[ta] if ta in alt_b and tb in alt_b else None
    if gap_a is not None and gap_b is not None and gap_a <= near_tie and gap_b <= near_tie:
        return None
    return (f"token {shared}: {ta!r} vs {tb!r}, logprob gaps {gap_a} and {gap_b} (a near-tie is at most {near_tie}; "
            f"alternatives {alt_a} and {alt_b})")


# ---------------------------------------------------------------- the prefix cache


def flush_cache(http: httpx.Client) -> None:
    """Empty the server's prefix cache (POST /flush_cache, waiting for running requests); fails unless sglang says it
    flushed."""
    __tracebackhide__ = True
    request = f"POST /flush_cache?timeout={FLUSH_WAIT_S}"
    response = http.post("/flush_cache", params={"timeout": FLUSH_WAIT_S})
    flushed = response.status_code == 200 and response.text.startswith(FLUSHED)
    checks.check(flushed, "the prefix cache was not flushed", request=request, expected=f"HTTP 200 {FLUSHED!r}...",
                 got=f"HTTP {response.status_code}: {response.text}")

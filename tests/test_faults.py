"""The fault catalogue against the conformance suites: every mutant of the GPU recording must fail a check.

The catalogue itself is checked on a hand-made sglang-shaped recording (always runs). The catch test replays the
conformance suites on the recording in ``docs/gpu-runs/recordings`` (or ``$LFM_FAULT_RECORDINGS``): the unmutated
recording passes, and each mutant fails at least one check (a failure that is not a replay miss). It prints the
``catch_rate`` line the README reports, and writes it as JSON to ``$LFM_FAULT_REPORT`` when that is set.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from faults import FAULTS, mutate_exchanges, mutate_recording, stores

from pytest_lfm.recording import Exchange, read_exchanges, write_exchanges

ROOT = Path(__file__).resolve().parents[1]
RECORDINGS = Path(os.environ.get("LFM_FAULT_RECORDINGS", ROOT / "docs" / "gpu-runs" / "recordings"))
MISS = "pytest-lfm replay:"  # how UnrecordedRequest messages start: a miss is not a caught fault


# ---------------------------------------------------------------- the catalogue on a hand-made recording

TOOL = {"type": "function", "function": {"name": "get_weather", "description": "Weather of a city", "parameters": {
    "type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}}}


def _call(i: int, city: str, *, stream: bool) -> dict[str, Any]:
    call = {"id": f"call_{i}", "type": "function",
            "function": {"name": "get_weather", "arguments": json.dumps({"location": city})}}
    return {"index": i, **call} if stream else call


def _completion(message: dict[str, Any], finish: str, *, n: int = 1, usage: tuple[int, int] = (20, 5),
                logprobs: bool = False) -> dict[str, Any]:
    return {"id": "c1", "object": "chat.completion", "created": 1, "model": "/models/micro-dense",
            "choices": [{"index": i, "message": {"role": "assistant", **message}, "finish_reason": finish,
                         "logprobs": {"content": [{"token": "x", "logprob": -0.1}]} if logprobs else None}
                        for i in range(n)],
            "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": sum(usage)}}


def _stream(deltas: list[tuple[dict[str, Any], str | None]], *, usage: bool = True, n: int = 1) -> list[Any]:
    base = {"id": "c2", "object": "chat.completion.chunk", "created": 1, "model": "/models/micro-dense"}
    events: list[dict[str, Any]] = []
    for i in range(n):
        events.append({"data": {**base, "choices": [{"index": i, "delta": {"role": "assistant", "content": ""},
                                                     "finish_reason": None}]}})
    for delta, finish in deltas:
        for i in range(n):
            events.append({"data": {**base, "choices": [{"index": i, "delta": delta, "finish_reason": finish,
                                                         "logprobs": None}]}})
    if usage:
        events.append({"data": {**base, "choices": [],
                                "usage": {"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25}}})
    events.append({"text": "[DONE]"})
    return [{**e, "t": 0.001 * k} for k, e in enumerate(events)]


def _ex(seq: int, request: Any, *, path: str = "/v1/chat/completions", status: int = 200, body: Any = None,
        events: list[Any] | None = None, method: str = "POST") -> Exchange:
    return Exchange(f"conformance/test_demo.py::test_{seq}", 0, method, path, "", f"d{seq}", 0, request=request,
                    status=status, headers={"content-type": "text/event-stream" if events else "application/json"},
                    body_format="sse" if events else "json", body=body, events=events, run="r")


def sample_recording() -> list[Exchange]:
    """One of each exchange shape the suites produce, shaped like sglang 0.5.17's answers (FACTS.md)."""
    ask = {"model": "m", "messages": [{"role": "user", "content": "Weather in Paris?"}], "tools": [TOOL]}
    image = {"type": "image_url", "image_url": {"url": "<image RGB 64x64 pixels sha256:0>"}}
    return [
        _ex(0, ask, body=_completion({"content": None, "tool_calls": [_call(0, "Paris", stream=False)]},
                                     "tool_calls")),
        _ex(1, {**ask, "stream": True, "stream_options": {"include_usage": True}}, events=_stream(
            [({"tool_calls": [_call(0, "Paris", stream=True)]}, None), ({}, "tool_calls")])),
        _ex(2, ask, body=_completion({"content": None, "tool_calls": [_call(0, "Paris", stream=False),
                                                                       _call(1, "Rome", stream=False)]},
                                     "tool_calls")),
        _ex(3, {**ask, "stream": True}, events=_stream(
            [({"tool_calls": [_call(0, "Paris", stream=True)]}, None),
             ({"tool_calls": [_call(1, "Rome", stream=True)]}, None), ({}, "tool_calls")], usage=False)),
        _ex(4, {"model": "m", "messages": [], "max_tokens": 8, "n": 2, "logprobs": True},
            body=_completion({"content": "Hello there."}, "stop", n=2, logprobs=True)),
        _ex(5, {"model": "m", "messages": [], "stream": True, "n": 2},
            events=_stream([({"content": "Hello"}, None), ({"content": " there."}, None), ({}, "stop")], n=2)),
        _ex(6, {"model": "m", "messages": [{"role": "user", "content": [image, {"type": "text", "text": "?"}]}]},
            body=_completion({"content": "A red circle."}, "stop", usage=(90, 4))),
        _ex(7, {**ask, "tool_choice": {"type": "function", "function": {"name": "nope"}}}, status=400,
            body={"object": "error", "message": "Tool 'nope' not found in tools list.", "type": "BadRequestError",
                  "param": None, "code": 400}),
        _ex(8, None, path="/v1/models", method="GET",
            body={"object": "list", "data": [{"id": "/models/micro-dense", "max_model_len": 4096}]}),
        _ex(9, None, path="/health_generate", method="GET", body=None),
    ]


@pytest.mark.parametrize("name", sorted(FAULTS))
def test_fault_changes_a_response_and_never_a_request(name: str, tmp_path: Path) -> None:
    original = sample_recording()
    mutated, touched = mutate_exchanges(name, original)
    assert touched, f"{name} applies to none of the sample exchanges"
    changed = [(o, m) for o, m in zip(original, mutated, strict=True) if m.to_json() != o.to_json()]
    assert {m.node for _, m in changed} == touched
    for before, after in changed:
        assert (after.key, after.request) == (before.key, before.request)
    write_exchanges(tmp_path, mutated)
    assert [e.to_json() for e in read_exchanges(tmp_path)] == [e.to_json() for e in mutated]


def test_catalogue_has_at_least_twenty_named_faults_with_their_check() -> None:
    assert len(FAULTS) >= 20
    assert all(f.description and f.trips for f in FAULTS.values())


# ---------------------------------------------------------------- the catch rate on the GPU recording


@dataclass
class SuiteRun:
    returncode: int
    output: str
    outcomes: dict[str, tuple[str, str]] = field(default_factory=dict)  # test -> (outcome, message)

    def failures(self) -> dict[str, str]:
        return {t: m for t, (o, m) in self.outcomes.items() if o in ("failure", "error")}

    def caught(self) -> dict[str, str]:
        return {t: m for t, m in self.failures().items() if MISS not in m}


def _selection(recording: Path) -> list[str]:
    metas = [json.loads((s / "meta.json").read_text()) for s in stores(recording)]
    args = [a for m in sorted({str(m.get("model", m["model_id"])) for m in metas}) for a in ("--lfm-model", m)]
    dtypes = {m.get("dtype", "bfloat16") for m in metas}
    return [*args, "--lfm-dtype", "both" if len(dtypes) > 1 else dtypes.pop()]


def run_suites(replay: Path, tests: list[str], work: Path) -> SuiteRun:
    """The conformance suites (or just ``tests``) replayed from ``replay`` in a subprocess."""
    junit = work / "junit.xml"
    command = [sys.executable, "-m", "pytest", *(tests or ["conformance"]), "--lfm-replay", str(replay),
               *_selection(replay), "-p", "no:cacheprovider", "-q", "-o", "junit_family=xunit2",
               f"--junitxml={junit}"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("LFM_")}  # no inherited --lfm-* settings
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800, check=False)
    run = SuiteRun(proc.returncode, proc.stdout[-4000:] + proc.stderr[-2000:])
    if junit.is_file():
        for case in ET.parse(junit).getroot().iter("testcase"):
            test = f"{case.get('classname')}::{case.get('name')}"
            outcome, message = "passed", ""
            for child in case:
                if child.tag in ("failure", "error", "skipped"):
                    outcome, message = child.tag, f"{child.get('message', '')}\n{child.text or ''}"
            run.outcomes[test] = (outcome, message)
    return run


needs_recording = pytest.mark.skipif(
    not (RECORDINGS.is_dir() and stores(RECORDINGS)),
    reason=f"no GPU recording in {RECORDINGS} yet (issue 7): record the suites on a GPU host with "
           f"`pytest conformance --lfm-model micro --lfm-record {RECORDINGS}`, or point $LFM_FAULT_RECORDINGS at one")

RESULTS: dict[str, dict[str, Any]] = {}


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> SuiteRun:
    return run_suites(RECORDINGS, [], tmp_path_factory.mktemp("baseline"))


@pytest.fixture(scope="module", autouse=True)
def catch_rate_summary(pytestconfig: pytest.Config) -> Iterator[None]:
    yield
    if not RESULTS:
        return
    caught = sorted(n for n, r in RESULTS.items() if r["caught"])
    missed = sorted(n for n, r in RESULTS.items() if not r["caught"])
    line = (f"catch_rate: {len(caught)}/{len(RESULTS)} mutants caught ({100 * len(caught) / len(RESULTS):.0f}%)"
            + (f"; missed: {', '.join(missed)}" if missed else ""))
    reporter = pytestconfig.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line("")
        reporter.write_line(f"pytest-lfm fault catalogue on {RECORDINGS}: {line}")
    if os.environ.get("LFM_FAULT_REPORT"):
        Path(os.environ["LFM_FAULT_REPORT"]).write_text(json.dumps(
            {"recording": str(RECORDINGS), "caught": len(caught), "total": len(RESULTS), "faults": RESULTS},
            indent=2, sort_keys=True) + "\n")


@needs_recording
def test_unmutated_recording_passes_the_suites(baseline: SuiteRun) -> None:
    assert baseline.returncode in (0, 5) and not baseline.failures(), (
        f"the conformance suites fail on the unmutated recording {RECORDINGS}:\n"
        + "\n".join(f"{t}: {m[:500]}" for t, m in baseline.failures().items()) + f"\n{baseline.output}")
    assert any(o == "passed" for o, _ in baseline.outcomes.values()), f"no test ran:\n{baseline.output}"


@needs_recording
@pytest.mark.parametrize("name", sorted(FAULTS))
def test_suites_catch_the_mutant(name: str, baseline: SuiteRun, tmp_path: Path) -> None:
    if baseline.failures():
        pytest.fail("the unmutated recording already fails the suites (see test_unmutated_recording_passes_the_suites)")
    fault = FAULTS[name]
    touched = mutate_recording(name, RECORDINGS, tmp_path / "recording")
    result: dict[str, Any] = {"trips": fault.trips, "tests_changed": len(touched), "caught": False, "caught_by": []}
    RESULTS[name] = result
    assert touched, (f"{name} ({fault.description}) found nothing to mutate: the suites never make the exchange "
                     f"it corrupts, so no check can guard '{fault.trips}'")
    run = run_suites(tmp_path / "recording", sorted(touched), tmp_path)
    result["caught_by"] = sorted(run.caught())
    result["caught"] = bool(run.caught())
    misses = sorted(set(run.failures()) - set(run.caught()))
    assert run.caught(), (
        f"no conformance check failed on mutant {name} ({fault.description}); expected to trip: {fault.trips}. "
        f"{len(touched)} tests replayed changed exchanges"
        + (f"; these failed only on replay misses (a later request changed): {misses}" if misses else "")
        + f"\n{run.output}")

"""The notes a test attaches to its entry in the report: one name per kind of note, shared by the suites, the plugin,
the report and compare; the payloads the report reads; and :func:`note` / :func:`notes_of`.

A note travels in the test report's ``user_properties`` as ``("lfm:" + key, value)``, which xdist carries to the
controller and junitxml writes as a testcase property.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, is_dataclass
from typing import Any, Final, TypedDict

import pytest

NOTE_PREFIX: Final = "lfm:"

# the launch configuration of a test parametrized by ``lfm_launch`` (noted by the collector at collection)
CONFIG: Final = "config"
MODEL: Final = "model"
# read by the report's tables (the payloads below)
LATENCY: Final = "latency"
FIDELITY: Final = "fidelity"
SCRIPTED_TURN: Final = "scripted_turn"
GRAMMAR_BACKEND: Final = "grammar_backend"  # the constrained-decoding backend a structured-output check ran on
QUIET: Final = "quiet"
# the rendered prompt of a check: compare's prompt changes and the report's "All checks" table
PROMPT_FINGERPRINT: Final = "prompt_fingerprint"
PROMPT_TOKENS: Final = "prompt_tokens"
# facts kept in the JSON for a reader
MEMORY: Final = "memory"
ENGINE_SHUTDOWN: Final = "engine_shutdown"
CONCURRENT_REQUESTS: Final = "concurrent_requests"
LOGPROB_PROMPTS: Final = "logprob_prompts"
LOGPROB_MAX_ABS_DIFF: Final = "logprob_max_abs_diff"
REFERENCE_MAX_ABS_DIFF: Final = "reference_max_abs_diff"
PROMPT_ID_MISMATCHES: Final = "prompt_id_mismatches"
PROMPT_LOGPROB_SHIFTS: Final = "prompt_logprob_shifts"
TOP_K_RANK_CHANGES: Final = "top_k_rank_changes"
ROUTING_NEAR_TIES: Final = "routing_near_ties"


class LatencyNote(TypedDict, total=False):
    """A latency measurement (conformance/test_latency.py) and its verdict against the model's budget."""

    config: str
    profile: str
    gpu: str | None
    concurrency: int
    workload: dict[str, Any]
    figures: dict[str, Any]  # LatencyResult.figures(): the report's KEY_FIGURES among them
    errors: list[str]
    budget: dict[str, Any] | None
    verdict: str
    verdicts: list[dict[str, Any]]


class FidelityNote(TypedDict, total=False):
    """The plugin's latency figures against sglang.bench_serving's on the same server and workload."""

    config: str
    gpu: str | None
    workload: dict[str, Any]
    ratios: dict[str, float]  # plugin / bench_serving, of the means
    normalized_ratios: dict[str, float]  # the same, normalized by the server's own figures (empty without them)
    judged: str
    rounds: int
    round_ratios: list[Any]
    ours: list[dict[str, Any]]
    ours_server: list[Any]
    bench_serving: list[dict[str, Any]]
    bench_serving_server: list[Any]


class ScriptedTurnNote(TypedDict):
    """One scripted turn of a micro checkpoint sent through the runtime."""

    checkpoint: str
    turn: str


class QuietNote(TypedDict, total=False):
    """What else ran on the GPU while a figure was measured (``RuntimePool.quiet``; ``alive`` None: not known)."""

    starting: list[str] | None
    paused: list[str]
    alive: list[str] | None
    workers_share_gpus: bool
    note: str


def note(request_or_item: pytest.FixtureRequest | pytest.Item, key: str, value: Any) -> None:
    """Attach ``key = value`` to the current test's entry in the report (and its junitxml testcase).

    ``value`` must be JSON-serializable (dataclasses are converted); it is stored in ``item.user_properties`` as
    ``("lfm:" + key, value)``, which xdist carries to the controller.
    """
    item = request_or_item.node if isinstance(request_or_item, pytest.FixtureRequest) else request_or_item
    if is_dataclass(value) and not isinstance(value, type):
        value = asdict(value)
    try:
        value = json.loads(json.dumps(value))
    except (TypeError, ValueError) as exc:
        raise TypeError(f"report.note({key!r}): the value must be JSON-serializable: {exc}") from None
    item.user_properties.append((NOTE_PREFIX + key, value))


def notes_of(user_properties: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """The notes among ``user_properties`` (prefix removed; a later note with the same key wins)."""
    return {k[len(NOTE_PREFIX):]: v for k, v in user_properties if isinstance(k, str) and k.startswith(NOTE_PREFIX)}

"""The report's JSON: its schema version, the verdict statuses, one check's record, and the tables computed from the
checks' notes (by a run's collector, and again by a merge from the merged checks)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, cast

from pytest_lfm.report.notes import (
    CONFIG,
    FIDELITY,
    GRAMMAR_BACKEND,
    LATENCY,
    QUIET,
    SCRIPTED_TURN,
    FidelityNote,
    LatencyNote,
    QuietNote,
    ScriptedTurnNote,
)

SCHEMA_VERSION = 1
STATUSES = ("fail", "xpass", "xfail", "skip", "pass")
SPLIT_FIELDS = ("wall_s", "launching_s", "launching_hidden_s", "startup_total_s", "testing_s", "idle_s")
# latency figures shown in the tables and recorded as junitxml suite properties
KEY_FIGURES = ("mean_ttft_ms", "mean_tpot_ms", "mean_itl_ms", "mean_e2e_ms", "output_tok_s", "failed")


@dataclass
class Check:
    """One test's verdict in the report."""

    nodeid: str
    status: str = "pass"
    reason: str = ""
    duration_s: float = 0.0
    notes: dict[str, Any] = field(default_factory=dict)


def latency_rows(checks: Iterable[Check]) -> list[dict[str, Any]]:
    """One row per test that noted "latency": its context, key figures and budget verdict."""
    rows = []
    for check in checks:
        if not isinstance(check.notes.get(LATENCY), dict):
            continue
        lat = cast(LatencyNote, check.notes[LATENCY])
        figures = lat.get("figures", {})
        rows.append({
            "test": check.nodeid,
            "config": lat.get("config", check.notes.get(CONFIG)),
            "profile": lat.get("profile"),
            "gpu": lat.get("gpu"),
            "concurrency": lat.get("concurrency"),
            **{k: figures.get(k) for k in KEY_FIGURES},
            "budget": lat.get("budget"),
            "verdict": lat.get("verdict", "reported"),
            "verdicts": lat.get("verdicts", []),
            "status": check.status,
            "conditions": conditions(check.notes.get(QUIET)),
        })
    return rows


def conditions(quiet: Any) -> str:
    """What else ran on the GPU while a figure was measured (the ``quiet`` note of the lfm_quiet fixture)."""
    if not isinstance(quiet, dict) or quiet.get("alive") is None:
        return "not known (runtime not launched here)"
    quiet = cast(QuietNote, quiet)
    shared = "; GPU shared with other xdist workers" if quiet.get("workers_share_gpus") else ""
    paused, running = quiet.get("paused") or [], quiet["alive"]
    alone = "alone" if not running else f"beside {', '.join(running)} (not pausable)"
    return f"{alone}: nothing starting, {len(paused)} other runtime(s) paused{shared}"


def fidelity_rows(checks: Iterable[Check]) -> list[dict[str, Any]]:
    """One row per test that noted "fidelity": the judged TTFT / TPOT ratios against bench_serving (normalized by
    the server's own figures where it had them), the plain ratios of the means, and how many rounds."""
    rows = []
    for check in checks:
        if not isinstance(check.notes.get(FIDELITY), dict):
            continue
        fid = cast(FidelityNote, check.notes[FIDELITY])
        plain, normalized = fid.get("ratios") or {}, fid.get("normalized_ratios") or {}
        judged = normalized or plain
        rows.append({"test": check.nodeid, "config": fid.get("config"), "gpu": fid.get("gpu"),
                     "rounds": fid.get("rounds"), "ttft": judged.get("ttft"), "tpot": judged.get("tpot"),
                     "normalized": bool(normalized), "plain_ttft": plain.get("ttft"),
                     "plain_tpot": plain.get("tpot"), "status": check.status})
    return rows


def scripted_turn_rows(checks: Iterable[Check]) -> list[dict[str, Any]]:
    """Per micro checkpoint: the scripted turns sent through the runtime, how many came back exactly, which not."""
    table: dict[str, dict[str, Any]] = {}
    for check in checks:
        if not isinstance(check.notes.get(SCRIPTED_TURN), dict) or check.status not in ("pass", "fail"):
            continue
        turn = cast(ScriptedTurnNote, check.notes[SCRIPTED_TURN])
        row = table.setdefault(turn["checkpoint"], {"checkpoint": turn["checkpoint"], "turns": 0, "exact": 0,
                                                     "missed": []})
        row["turns"] += 1
        if check.status == "pass":
            row["exact"] += 1
        else:
            row["missed"].append(turn["turn"])
    for row in table.values():
        row["percent"] = round(100 * row["exact"] / row["turns"], 1)
    return [table[k] for k in sorted(table)]


def grammar_rows(checks: Iterable[Check]) -> list[dict[str, Any]]:
    """Per launch configuration: the grammar backend its structured-output checks ran on (the server's
    ``grammar_backend``) and how many of them passed."""
    table: dict[tuple[str, str], dict[str, Any]] = {}
    for check in checks:
        backend = check.notes.get(GRAMMAR_BACKEND)
        if not isinstance(backend, str):
            continue
        config = str(check.notes.get(CONFIG, "-"))
        row = table.setdefault((config, backend), {"config": config, "grammar_backend": backend, "checks": 0,
                                                   "passed": 0})
        row["checks"] += 1
        row["passed"] += check.status == "pass"
    return [table[k] for k in sorted(table)]

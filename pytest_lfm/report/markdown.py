"""Markdown: the one table writer that the report and compare share, and the report's own rendering."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pytest_lfm.matrix import launch_reasons
from pytest_lfm.report.notes import PROMPT_FINGERPRINT, PROMPT_TOKENS
from pytest_lfm.report.schema import KEY_FIGURES, STATUSES


def cell(value: Any) -> str:
    """One table cell: "-" for None, floats to three decimals (one from 100 up), pipes escaped, one line."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def table(header: list[str], rows: Iterable[Iterable[Any]]) -> list[str]:
    """The lines of a Markdown table: the header, its rule, one line per row of :func:`cell` values."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return lines


def latency_table(rows: list[dict[str, Any]]) -> list[str]:
    """The latency rows (:func:`~pytest_lfm.report.schema.latency_rows`) as a table; none for no rows."""
    if not rows:
        return []
    return table(
        ["config", "profile", "GPU", "conc.", "TTFT ms", "TPOT ms", "ITL ms", "E2E ms", "tok/s", "failed", "budget",
         "measured"],
        ([r["config"], r["profile"], r["gpu"], r["concurrency"], *(r[k] for k in KEY_FIGURES), r["verdict"],
          r.get("conditions")] for r in rows),
    )


def _gib(mib: Any) -> str | None:
    return f"{mib / 1024:.1f}" if isinstance(mib, (int, float)) else None


def render_markdown(data: Mapping[str, Any]) -> str:
    """The report as Markdown: environment, launches, verdict summary, failures, latency, all checks."""
    v = data["versions"]
    merged = data.get("merged")  # a report of pytest_lfm.report.merge: its parts' commands instead of one
    run = (f"merged from {len(merged['parts'])} reports ({merged['duration_sum_s']} s in all)" if merged
           else f"`pytest {' '.join(data['args'])}`")
    lines = [
        "# pytest-lfm qualification report", "",
        f"{data['created']} on {data['host']}, {data['duration_s']} s; {run}", "",
        *(["## Merged reports", "", *table(["report", "host", "created", "s", "command"], (
            (p["file"], p["host"], p["created"], p["duration_s"], "pytest " + " ".join(p["args"]))
            for p in merged["parts"])), ""] if merged else []),
        "## Environment", "",
        *table(["package", "version"], ((k, v[k]) for k in v)), "",
        "GPUs: " + (", ".join(f"{g.get('index')}: {g.get('name', g.get('error'))}" for g in data["gpus"]) or "none"),
        "",
        "Models: " + ", ".join(f"`{m['id']}`" for m in data["models"]), "",
    ]
    split = data.get("time_split")
    if split:
        lines += ["## Time split", "", *table(
            ["wall s", "waiting for runtimes s", "testing s", "idle s", "startups s (sum)", "startups hidden s",
             "launches", "planned"],
            [[split.get("wall_s"), split.get("launching_s"), split.get("testing_s"), split.get("idle_s"),
              split.get("startup_total_s"), split.get("launching_hidden_s"), split.get("launches"),
              split.get("planned")]]), "",
            "Waiting: the tests stood still until a runtime was ready. Hidden: startup time that ran while tests "
            "ran (summed over launches, so it can exceed the wall time). Idle: collection, builds outside a "
            "launch, teardown and reports.", ""]
    if data["launches"]:
        lines += ["## Runtime launches", "",
                  *table(["config", "kind", "worker", "GPUs", "planned", "background", "tests", "started s",
                           "startup s", "of it building s", "GiB held", "error", "arguments", "why"],
                          ((x["config"], x["kind"], x.get("worker"), ",".join(map(str, x["gpus"])),
                            x.get("planned"), x.get("background"), x.get("tests"), x.get("started_s"),
                            x.get("startup_seconds"), x.get("build_seconds"), _gib(x.get("memory_mib")), x.get("error"),
                            " ".join(x["args"]), "; ".join(launch_reasons(x["config"])) or "-")
                           for x in data["launches"])), ""]
    lines += ["## Verdicts", "", *table(list(data["summary"]), [list(data["summary"].values())]), ""]
    flagged = [c for c in data["checks"] if c["status"] in ("fail", "xpass", "xfail", "skip")]
    if flagged:
        flagged.sort(key=lambda c: STATUSES.index(c["status"]))
        lines += ["### Not passing", "",
                  *table(["status", "check", "reason"], ((c["status"], c["nodeid"], c["reason"]) for c in flagged)),
                  ""]
    if data["latency"]:
        lines += ["## Latency (mean over requests; bench_serving definitions)", "", *latency_table(data["latency"]),
                  ""]
    if data.get("fidelity"):
        lines += ["## Fidelity: plugin / sglang.bench_serving, same server and workload", "",
                  *table(["config", "GPU", "rounds", "TTFT", "TPOT", "judged on", "plain TTFT", "plain TPOT",
                           "status"],
                          ((r["config"], r["gpu"], r["rounds"], r["ttft"], r["tpot"],
                            "server-normalized" if r["normalized"] else "plain", r["plain_ttft"], r["plain_tpot"],
                            r["status"]) for r in data["fidelity"])), ""]
    if data.get("scripted_turns"):
        lines += ["## Micro checkpoints: scripted turns through the runtime (temperature 0)", "",
                  *table(["checkpoint", "turns", "exact", "percent", "missed"],
                          ((r["checkpoint"], r["turns"], r["exact"], r["percent"], ", ".join(r["missed"]) or "-")
                           for r in data["scripted_turns"])), ""]
    if data.get("grammar"):
        lines += ["## Structured output: grammar backend", "",
                  *table(["config", "grammar backend", "checks", "passed"],
                          ((r["config"], r["grammar_backend"], r["checks"], r["passed"]) for r in data["grammar"])),
                  ""]
    lines += ["## All checks", "",
              *table(["check", "status", "s", "prompt", "tokens"],
                      ((c["nodeid"], c["status"], c["duration_s"], c["notes"].get(PROMPT_FINGERPRINT),
                        c["notes"].get(PROMPT_TOKENS)) for c in data["checks"])), ""]
    return "\n".join(lines)

"""Compare two qualification reports (e.g. before and after an sglang upgrade): what started or stopped passing,
which latency figures moved beyond a threshold, and where the prompt the model is given changed.

    pytest-lfm compare OLD.json NEW.json --threshold 0.05
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pytest_lfm.report.markdown import table
from pytest_lfm.report.notes import PROMPT_FINGERPRINT, PROMPT_TOKENS
from pytest_lfm.report.schema import KEY_FIGURES, SCHEMA_VERSION, STATUSES

PASSING = ("pass", "xpass")
ABSENT = "absent"
# latency figures where a higher value is better (the others are latencies: lower is better)
HIGHER_IS_BETTER = ("output_tok_s",)


@dataclass(frozen=True)
class StatusChange:
    """A check whose verdict changed; ``reason`` is the new run's reason."""

    nodeid: str
    old: str
    new: str
    reason: str = ""


@dataclass(frozen=True)
class LatencyChange:
    """A latency figure of one test that moved by more than the threshold (``relative`` = new / old - 1)."""

    nodeid: str
    figure: str
    old: float
    new: float
    relative: float

    @property
    def worse(self) -> bool:
        return self.relative < 0 if self.figure in HIGHER_IS_BETTER else self.relative > 0


@dataclass(frozen=True)
class PromptChange:
    """The same check rendered a different prompt (fingerprint) or a different number of prompt tokens."""

    nodeid: str
    old_fingerprint: str | None
    new_fingerprint: str | None
    old_tokens: int | None
    new_tokens: int | None


@dataclass
class Diff:
    """Everything that differs between two reports, grouped the way a reviewer reads an upgrade."""

    old_label: str
    new_label: str
    threshold: float
    newly_failing: list[StatusChange] = field(default_factory=list)
    newly_passing: list[StatusChange] = field(default_factory=list)
    xfails_passing: list[StatusChange] = field(default_factory=list)
    other_changes: list[StatusChange] = field(default_factory=list)
    one_sided: list[StatusChange] = field(default_factory=list)  # checks only one report holds (another selection)
    latency: list[LatencyChange] = field(default_factory=list)
    prompts: list[PromptChange] = field(default_factory=list)
    old_checks: int = 0
    new_checks: int = 0
    shared_checks: int = 0  # check ids both reports hold: the part whose verdicts were compared

    @property
    def overlap(self) -> float:
        """The shared checks as a share of the smaller report's checks (1.0: one report's selection holds the
        other's)."""
        smaller = min(self.old_checks, self.new_checks)
        return self.shared_checks / smaller if smaller else 0.0

    @property
    def regressed(self) -> bool:
        """True when a check newly fails or a latency figure got worse beyond the threshold."""
        return bool(self.newly_failing) or any(c.worse for c in self.latency)

    @property
    def verdict_changes(self) -> list[StatusChange]:
        """Every check both reports hold whose verdict differs (e.g. a replay against the run it was recorded in)."""
        return [*self.newly_failing, *self.newly_passing, *self.xfails_passing, *self.other_changes]


class ReportError(ValueError):
    """An input that is no readable pytest-lfm report of this schema, or reports that cannot be combined; the
    message names the file and the fix."""


FIX = "pass the JSON that --lfm-report DIR writes (DIR/lfm-report-<date>-<time>.json)"


def validate(data: Any, source: str) -> None:
    """:class:`ReportError` unless ``data`` (read from ``source``) is a report of this schema version with checks;
    a report of another schema is refused rather than read, as its fields could mean other things."""
    if not isinstance(data, Mapping) or not isinstance(data.get("checks"), list):
        raise ReportError(f"{source}: not a pytest-lfm report (no 'checks' list); {FIX}")
    schema = data.get("schema")
    if schema != SCHEMA_VERSION or isinstance(schema, bool):
        found = "has no schema version" if schema is None else f"is of report schema {schema!r}"
        raise ReportError(f"{source}: {found}, this pytest-lfm reads schema {SCHEMA_VERSION}; "
                          "use the pytest-lfm version that wrote it, or run the suite again to write a new report")
    if not data["checks"]:
        raise ReportError(f"{source}: the report holds no checks (the run collected nothing); {FIX} of a run "
                          "that ran tests")
    for i, check in enumerate(data["checks"]):
        if not (isinstance(check, dict) and isinstance(check.get("nodeid"), str)
                and check.get("status") in STATUSES and isinstance(check.get("notes", {}), dict)):
            raise ReportError(f"{source}: checks[{i}] lacks a 'nodeid', a 'status' ({', '.join(STATUSES)}) or "
                              f"'notes' as an object: a damaged report; {FIX}")
    latency = data.get("latency", [])
    if not isinstance(latency, list) or not all(isinstance(r, dict) and isinstance(r.get("test"), str)
                                                for r in latency):
        raise ReportError(f"{source}: 'latency' is not a list of rows with a 'test': a damaged report; {FIX}")


def load(path: str | Path) -> dict[str, Any]:
    """Read and :func:`validate` a report JSON written by pytest-lfm; :class:`ReportError` when it is missing,
    unreadable, empty, not JSON, not a report or of another schema."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ReportError(f"{path}: no such file; {FIX}") from None
    except IsADirectoryError:
        raise ReportError(f"{path}: is a directory; {FIX}") from None
    except UnicodeDecodeError:
        raise ReportError(f"{path}: not a text file; {FIX}") from None
    except OSError as exc:
        raise ReportError(f"{path}: cannot be read ({exc.strerror}); {FIX}") from None
    if not text.strip():
        raise ReportError(f"{path}: empty file (a run cut off before it wrote its report?); {FIX}")
    try:
        data: dict[str, Any] = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ReportError(f"{path}: not JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); {FIX}") from None
    validate(data, str(path))
    return data


def _label(data: Mapping[str, Any]) -> str:
    versions = data.get("versions", {})
    gpus = sorted({g["name"] for g in data.get("gpus", []) if "name" in g})
    return f"sglang {versions.get('sglang')}, {', '.join(gpus) or 'no GPU'}, {data.get('created', '?')}"


def _status_changes(diff: Diff, old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
    for nodeid in sorted(set(old) | set(new)):
        before = old[nodeid]["status"] if nodeid in old else ABSENT
        after = new[nodeid]["status"] if nodeid in new else ABSENT
        if before == after:
            continue
        change = StatusChange(nodeid, before, after, new[nodeid].get("reason", "") if nodeid in new else "")
        if ABSENT in (before, after):
            diff.one_sided.append(change)
        elif after == "fail":
            diff.newly_failing.append(change)
        elif before == "xfail" and after in PASSING:
            diff.xfails_passing.append(change)
        elif before == "fail" and after in PASSING:
            diff.newly_passing.append(change)
        else:
            diff.other_changes.append(change)


def _latency_changes(diff: Diff, old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
    old_rows = {row["test"]: row for row in old.get("latency", [])}
    for row in new.get("latency", []):
        before = old_rows.get(row["test"])
        if before is None:
            continue
        for figure in KEY_FIGURES:
            a, b = before.get(figure), row.get(figure)
            if a is None or b is None:
                continue
            relative = b / a - 1 if a else (0.0 if b == 0 else float("inf"))
            if abs(relative) > diff.threshold:
                diff.latency.append(LatencyChange(row["test"], figure, float(a), float(b), relative))


def _prompt_changes(diff: Diff, old: Mapping[str, Any], new: Mapping[str, Any]) -> None:
    for nodeid in sorted(set(old) & set(new)):
        a, b = old[nodeid].get("notes", {}), new[nodeid].get("notes", {})
        keys = (PROMPT_FINGERPRINT, PROMPT_TOKENS)
        if not any(k in a for k in keys) or not any(k in b for k in keys):
            continue  # a run that never got to render the prompt (e.g. its server did not start) has nothing to compare
        if a.get(PROMPT_FINGERPRINT) != b.get(PROMPT_FINGERPRINT) or a.get(PROMPT_TOKENS) != b.get(PROMPT_TOKENS):
            diff.prompts.append(PromptChange(nodeid, a.get(PROMPT_FINGERPRINT), b.get(PROMPT_FINGERPRINT),
                                             a.get(PROMPT_TOKENS), b.get(PROMPT_TOKENS)))


def _report(source: str | Path | Mapping[str, Any], name: str) -> Mapping[str, Any]:
    if isinstance(source, Mapping):
        validate(source, name)
        return source
    return load(source)


def compare(old: str | Path | Mapping[str, Any], new: str | Path | Mapping[str, Any], threshold: float = 0.05) -> Diff:
    """The differences from report ``old`` to report ``new`` (paths or loaded dicts; :class:`ReportError` when
    one is no report of this schema)."""
    old_data, new_data = _report(old, "old report"), _report(new, "new report")
    diff = Diff(_label(old_data), _label(new_data), threshold)
    old_checks = {c["nodeid"]: c for c in old_data["checks"]}
    new_checks = {c["nodeid"]: c for c in new_data["checks"]}
    diff.old_checks, diff.new_checks = len(old_checks), len(new_checks)
    diff.shared_checks = len(old_checks.keys() & new_checks.keys())
    _status_changes(diff, old_checks, new_checks)
    _latency_changes(diff, old_data, new_data)
    _prompt_changes(diff, old_checks, new_checks)
    return diff


def _section(title: str, header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = [f"## {title} ({len(rows)})", ""]
    if not rows:
        return [*lines, "None.", ""]
    return [*lines, *table(header, rows), ""]


def render_markdown(diff: Diff) -> str:
    """The diff as Markdown, one section per kind of change."""
    def status_rows(changes: list[StatusChange]) -> list[list[Any]]:
        return [[c.nodeid, c.old, c.new, c.reason] for c in changes]

    status_header = ["check", "old", "new", "reason (new run)"]
    lines = [
        "# pytest-lfm report comparison", "",
        f"- old: {diff.old_label}", f"- new: {diff.new_label}",
        f"- latency threshold: {diff.threshold:.0%}",
        f"- checks in both reports: {diff.shared_checks} ({diff.overlap:.1%} of the smaller report's "
        f"{min(diff.old_checks, diff.new_checks)}; old {diff.old_checks}, new {diff.new_checks})", "",
        *_section("Newly failing", status_header, status_rows(diff.newly_failing)),
        *_section("Newly passing", status_header, status_rows(diff.newly_passing)),
        *_section("Expected failures now passing", status_header, status_rows(diff.xfails_passing)),
        *_section("Latency changes beyond the threshold", ["test", "figure", "old", "new", "change", ""],
                  [[c.nodeid, c.figure, f"{c.old:.3f}", f"{c.new:.3f}", f"{c.relative:+.1%}",
                    "worse" if c.worse else "better"] for c in diff.latency]),
        *_section("Prompt changes (same request, different rendered prompt)",
                  ["check", "old fingerprint", "new fingerprint", "old tokens", "new tokens"],
                  [[c.nodeid, c.old_fingerprint, c.new_fingerprint, c.old_tokens, c.new_tokens]
                   for c in diff.prompts]),
        *_section("Other verdict changes", status_header, status_rows(diff.other_changes)),
        *_one_sided(diff.one_sided),
    ]
    return "\n".join(lines)


def _one_sided(changes: list[StatusChange], examples: int = 10) -> list[str]:
    """Checks that only one of the reports holds (different selections), counted rather than listed in full."""
    lines = ["## Checks in only one report", ""]
    for side, label in (("old", "only in the old report"), ("new", "only in the new report")):
        ids = [c.nodeid for c in changes if (c.new if side == "old" else c.old) == ABSENT]
        shown = ", ".join(f"`{i}`" for i in ids[:examples]) + (", ..." if len(ids) > examples else "")
        lines.append(f"- {len(ids)} {label}" + (f": {shown}" if ids else ""))
    return [*lines, ""]

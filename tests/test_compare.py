"""`pytest-lfm compare OLD.json NEW.json`: verdict, latency and prompt changes between two reports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from pytest_lfm import cli
from pytest_lfm.report.compare import ReportError, compare, load, render_markdown


def check(nodeid: str, status: str, reason: str = "", **notes: Any) -> dict[str, Any]:
    return {"nodeid": nodeid, "status": status, "reason": reason, "duration_s": 0.1, "notes": notes}


def row(test: str, ttft: float, tpot: float, tok_s: float, failed: int = 0) -> dict[str, Any]:
    return {"test": test, "config": "micro-dense", "profile": "default", "gpu": "NVIDIA H100", "concurrency": 1,
            "mean_ttft_ms": ttft, "mean_tpot_ms": tpot, "mean_itl_ms": tpot, "mean_e2e_ms": ttft + 127 * tpot,
            "output_tok_s": tok_s, "failed": failed, "verdict": "reported"}


def report(version: str, checks: list[dict[str, Any]], latency: list[dict[str, Any]]) -> dict[str, Any]:
    return {"schema": 1, "created": "2026-01-01T00:00:00+00:00", "versions": {"sglang": version},
            "gpus": [{"index": 0, "name": "NVIDIA H100 80GB HBM3"}], "checks": checks, "latency": latency}


OLD = report("0.5.14", [
    check("t::stays_passing", "pass"),
    check("t::breaks", "pass"),
    check("t::gets_fixed", "fail", "wrong city"),
    check("t::upstream_bug", "xfail", "#27614"),
    check("t::tools_prompt", "pass", prompt_fingerprint="aaaaaaaaaaaa", prompt_tokens=227),
    check("t::plain_prompt", "pass", prompt_fingerprint="bbbbbbbbbbbb", prompt_tokens=20),
    check("t::gone", "pass"),
    check("t::latency", "pass"),
], [row("t::latency", 15.0, 1.20, 700.0)])

NEW = report("0.5.17", [
    check("t::stays_passing", "pass"),
    check("t::breaks", "fail", "AssertionError: finish_reason 'stop' != 'tool_calls'"),
    check("t::gets_fixed", "pass"),
    check("t::upstream_bug", "xpass", "#27614"),
    check("t::tools_prompt", "pass", prompt_fingerprint="cccccccccccc", prompt_tokens=257),
    check("t::plain_prompt", "pass", prompt_fingerprint="bbbbbbbbbbbb", prompt_tokens=20),
    check("t::new_check", "skip", "no GPU"),
    check("t::latency", "pass"),
], [row("t::latency", 15.3, 1.50, 600.0)])


def test_compare_groups_the_changes() -> None:
    diff = compare(OLD, NEW, threshold=0.05)
    assert [(c.nodeid, c.old, c.new) for c in diff.newly_failing] == [("t::breaks", "pass", "fail")]
    assert "finish_reason" in diff.newly_failing[0].reason
    assert [c.nodeid for c in diff.newly_passing] == ["t::gets_fixed"]
    assert [(c.nodeid, c.new) for c in diff.xfails_passing] == [("t::upstream_bug", "xpass")]
    assert {(c.nodeid, c.old, c.new) for c in diff.one_sided} == {("t::gone", "pass", "absent"),
                                                                  ("t::new_check", "absent", "skip")}
    [prompt] = diff.prompts
    assert (prompt.nodeid, prompt.old_tokens, prompt.new_tokens) == ("t::tools_prompt", 227, 257)
    moved = {c.figure: c for c in diff.latency}
    assert set(moved) == {"mean_tpot_ms", "mean_itl_ms", "mean_e2e_ms", "output_tok_s"}  # TTFT moved only 2%
    assert moved["mean_tpot_ms"].relative == pytest.approx(0.25) and moved["mean_tpot_ms"].worse
    assert moved["output_tok_s"].worse  # throughput went down
    assert diff.regressed


def test_threshold_filters_latency() -> None:
    assert {c.figure for c in compare(OLD, NEW, threshold=0.5).latency} == set()
    assert "mean_ttft_ms" in {c.figure for c in compare(OLD, NEW, threshold=0.01).latency}


def test_faster_is_not_a_regression() -> None:
    diff = compare(report("a", [check("t::l", "pass")], [row("t::l", 20, 2, 500)]),
                   report("b", [check("t::l", "pass")], [row("t::l", 10, 1, 1000)]))
    assert diff.latency and not any(c.worse for c in diff.latency) and not diff.regressed


def test_identical_reports_have_no_diff() -> None:
    diff = compare(OLD, OLD)
    assert not (diff.newly_failing or diff.newly_passing or diff.xfails_passing or diff.other_changes
                or diff.latency or diff.prompts)
    assert "None." in render_markdown(diff)


def test_markdown_lists_every_section() -> None:
    text = render_markdown(compare(OLD, NEW))
    for part in ("sglang 0.5.14", "sglang 0.5.17", "## Newly failing (1)", "## Newly passing (1)",
                 "## Expected failures now passing (1)", "## Latency changes beyond the threshold (4)",
                 "| t::latency | mean_tpot_ms | 1.200 | 1.500 | +25.0% | worse |",
                 "| t::tools_prompt | aaaaaaaaaaaa | cccccccccccc | 227 | 257 |",
                 "## Checks in only one report", "- 1 only in the old report: `t::gone`"):
        assert part in text, part
    assert "| t::gone |" not in text  # counted, not listed as a verdict change


def test_cli_compare(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old, new = tmp_path / "old.json", tmp_path / "new.json"
    old.write_text(json.dumps(OLD))
    new.write_text(json.dumps(NEW))
    assert cli.main(["compare", str(old), str(new), "--threshold", "0.1"]) == 1
    out = capsys.readouterr().out
    assert "## Newly failing (1)" in out and "threshold: 10%" in out
    assert cli.main(["compare", str(old), str(old)]) == 0


def test_load_rejects_other_json(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text(json.dumps({"benchmarks": []}))
    with pytest.raises(ValueError, match="not a pytest-lfm report"):
        load(path)


def test_a_check_only_one_report_holds_is_not_a_verdict_change(tmp_path: Path) -> None:
    old = report("0.5.14", [check("t::same", "pass")], [])
    new = report("0.5.17", [check("t::same", "pass"), check("t::added", "fail", "boom")], [])
    diff = compare(old, new)
    assert not diff.newly_failing and not diff.regressed and not diff.verdict_changes
    assert [(c.nodeid, c.old, c.new) for c in diff.one_sided] == [("t::added", "absent", "fail")]


def test_same_verdicts_flag_fails_on_any_changed_verdict(tmp_path: Path) -> None:
    old, new = tmp_path / "gpu.json", tmp_path / "replay.json"
    old.write_text(json.dumps(report("0.5.17", [check("t::a", "pass"), check("t::b", "fail", "x")], [])))
    new.write_text(json.dumps(report("0.5.17", [check("t::a", "pass"), check("t::b", "pass")], [])))
    assert cli.main(["compare", str(old), str(new)]) == 0  # newly passing is no regression
    assert cli.main(["compare", str(old), str(new), "--same-verdicts"]) == 1
    new.write_text(old.read_text())
    assert cli.main(["compare", str(old), str(new), "--same-verdicts"]) == 0


def test_changed_names_the_verdicts_known_to_differ(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old, new, changed = tmp_path / "gpu.json", tmp_path / "replay.json", tmp_path / "changed.txt"
    checks = [check("t::a", "pass"), check("t::b", "fail", "x"), check("t::c", "fail", "y")]
    old.write_text(json.dumps(report("0.5.17", checks, [])))
    new.write_text(json.dumps(report("0.5.17", [checks[0], check("t::b", "skip"), check("t::c", "xfail")], [])))
    changed.write_text("# changed since the GPU run\nt::b  # now skipped there\n\n")
    args = ["compare", str(old), str(new), "--same-verdicts", "--changed", str(changed)]
    assert cli.main(args) == 1  # t::c changed too, unlisted
    assert "changed and not in " in capsys.readouterr().err
    changed.write_text("t::b\nt::c  # xfail since\n")
    assert cli.main(args) == 0
    changed.write_text("t::b\nt::c\nt::a  # listed, yet unchanged\n")
    assert cli.main(args) == 2
    assert "names 1 checks whose verdict did not change" in capsys.readouterr().err and "t::a" in changed.read_text()
    assert cli.main([*args[:-1], str(tmp_path / "missing.txt")]) == 2
    assert cli.main(["compare", str(old), str(new), "--changed", str(changed)]) == 2  # without --same-verdicts
    assert "it goes with --same-verdicts" in capsys.readouterr().err


def write(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data))
    return path


BAD_INPUTS: dict[str, str | bytes | None] = {
    "missing": None,
    "directory": None,
    "empty": "",
    "not-json": "{'checks': [",
    "binary": b"\x89PNG\r\n\x1a\n\xff\xfe",
    "other-json": json.dumps({"benchmarks": []}),
    "a-list": json.dumps([1, 2]),
    "other-schema": json.dumps({**report("0.5.17", [check("t::a", "pass")], []), "schema": 2}),
    "no-schema": json.dumps({k: v for k, v in report("0.5.17", [check("t::a", "pass")], []).items()
                             if k != "schema"}),
    "no-checks": json.dumps(report("0.5.17", [], [])),
    "damaged-check": json.dumps(report("0.5.17", [{"nodeid": "t::a"}], [])),
}


@pytest.mark.parametrize("kind", BAD_INPUTS)
def test_bad_input_is_one_error_naming_the_file_and_exit_2(kind: str, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    good = write(tmp_path / "good.json", OLD)
    bad = tmp_path / f"{kind}.json"
    content = BAD_INPUTS[kind]
    if kind == "directory":
        bad.mkdir()
    elif isinstance(content, bytes):
        bad.write_bytes(content)
    elif content is not None:
        bad.write_text(content)
    for args in ([str(bad), str(good)], [str(good), str(bad)], [str(good), str(bad), "--same-verdicts"]):
        assert cli.main(["compare", *args]) == cli.BAD_INPUT == 2
        captured = capsys.readouterr()
        assert not captured.out  # nothing that reads as a diff ("Newly failing (0)")
        [line] = captured.err.splitlines()
        assert line.startswith(f"pytest-lfm compare: {bad}: ") and ("--lfm-report" in line or "schema" in line)


def test_another_schema_version_is_refused_not_read_as_no_change() -> None:
    with pytest.raises(ReportError, match=r"new report: is of report schema 2, this pytest-lfm reads schema 1"):
        compare(OLD, {**NEW, "schema": 2})


def test_bad_input_prints_no_traceback(tmp_path: Path) -> None:
    missing = tmp_path / "missing.json"
    result = subprocess.run([sys.executable, "-m", "pytest_lfm.cli", "compare", str(missing), str(missing)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr == f"pytest-lfm compare: {missing}: no such file; pass the JSON that --lfm-report DIR " \
                            "writes (DIR/lfm-report-<date>-<time>.json)\n"


def test_the_overlap_is_printed() -> None:
    text = render_markdown(compare(OLD, NEW))
    assert "- checks in both reports: 7 (87.5% of the smaller report's 8; old 8, new 8)" in text


def test_same_verdicts_needs_the_overlap(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old, new = write(tmp_path / "old.json", OLD), write(tmp_path / "new.json", NEW)  # 7 of 8 ids in common
    assert cli.main(["compare", str(old), str(new), "--same-verdicts"]) == 2  # default: 90% of the smaller
    err = capsys.readouterr().err
    assert "7 check ids in common, 87.5% of the smaller report's 8 checks, below --min-overlap 90%" in err
    assert cli.main(["compare", str(old), str(new), "--same-verdicts", "--min-overlap", "0.85"]) == 1  # verdicts
    assert cli.main(["compare", str(old), str(new), "--min-overlap", "0.95"]) == 2  # given: also without
    assert cli.main(["compare", str(old), str(new)]) == 1  # no default without --same-verdicts: the regression


def test_no_check_in_common_is_bad_input_in_both_modes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dense = write(tmp_path / "dense.json", report("0.5.17", [check("t[micro-dense]", "pass")], []))
    vl = write(tmp_path / "vl.json", report("0.5.17", [check("t[micro-vl]", "pass")], []))
    for flags in ([], ["--same-verdicts"], ["--same-verdicts", "--min-overlap", "0.01"]):
        assert cli.main(["compare", str(dense), str(vl), *flags]) == 2
        captured = capsys.readouterr()
        assert "- checks in both reports: 0 (0.0% of the smaller report's 1" in captured.out
        assert "0 check ids in common" in captured.err and "nothing was compared" in captured.err


@pytest.mark.parametrize("value", ["0", "1.5", "-0.1", "most", "nan"])
def test_min_overlap_is_a_fraction(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["compare", "a.json", "b.json", "--min-overlap", value])
    assert exc.value.code == 2 and "no fraction in (0, 1]" in capsys.readouterr().err

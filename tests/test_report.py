"""The qualification report: verdicts, notes, launches and latency into one JSON and one Markdown file per run."""

from __future__ import annotations

import datetime as dt
import json
import xml.etree.ElementTree as ET
from importlib.metadata import entry_points
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from pytest_lfm import report

# the plugin loads through its pytest11 entry point once installed; before that, name it
PLUGIN_ARGS = () if any(ep.value == "pytest_lfm.plugin" for ep in entry_points(group="pytest11")) else (
    "-p", "pytest_lfm.plugin")

CONFTEST = """
import pytest
from pytest_lfm.runtime import Launch, RuntimePool
from pytest_lfm.state import RUN


class RecordedPool(RuntimePool):
    # what RuntimePool records when it starts a server, without starting one: a launch that took 12.5 s, of which
    # a test waited 2 s (the other 10.5 s ran while tests ran)

    @property
    def launches(self):
        return [Launch("server", "micro-dense", "micro-dense", ["--tool-call-parser", "lfm2"], [0], started_s=0.0,
                       ready_s=12.5, startup_seconds=12.5)]


@pytest.fixture(scope="session", autouse=True)
def fake_launch(pytestconfig, tmp_path_factory):
    pool = RecordedPool([0], tmp_path_factory.mktemp("logs"), 60.0, capacity_mib=0)
    pool.waits.append((pool.t0, pool.t0 + 2.0))
    pytestconfig.stash[RUN].pool = pool
"""

SUITE = """
import pytest
from pytest_lfm.report import note


def test_pass(request):
    note(request, "prompt_fingerprint", "abc123def456")
    note(request, "prompt_tokens", 257)


def test_fail():
    assert 1 == 2, "one is not two"


@pytest.mark.xfail(reason="known bug #27614")
def test_xfail():
    assert False


@pytest.mark.xfail(reason="fixed upstream?", strict=False)
def test_xpass():
    pass


def test_skip():
    pytest.skip("no GPU here")


@pytest.fixture
def broken():
    raise RuntimeError("server did not start")


def test_setup_error(broken):
    pass


def test_latency(request):
    note(request, "latency", {
        "config": "micro-dense", "profile": "default", "gpu": "NVIDIA H100 80GB HBM3", "concurrency": 1,
        "figures": {"mean_ttft_ms": 15.7, "mean_tpot_ms": 1.23, "mean_itl_ms": 1.23, "mean_e2e_ms": 172.0,
                    "output_tok_s": 740.5, "failed": 0},
        "budget": None, "verdict": "reported (no budget)", "verdicts": []})
    note(request, "fidelity", {"config": "micro-dense---enable-metrics", "gpu": "NVIDIA H100 80GB HBM3", "rounds": 4,
                               "ratios": {"ttft": 1.104, "tpot": 1.123}, "normalized_ratios": {"ttft": 1.01,
                                                                                              "tpot": 0.998}})
"""


def run_suite(pytester: pytest.Pytester, *args: str) -> tuple[pytest.RunResult, Path]:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_suite=SUITE)
    out = pytester.path / "reports"
    result = pytester.runpytest(*PLUGIN_ARGS, "-p", "no:cacheprovider", "--lfm-report", str(out), *args)
    return result, out


def load(out: Path) -> tuple[dict[str, Any], str]:
    files = sorted(out.iterdir())
    assert [f.suffix for f in files] == [".json", ".md"], files
    return json.loads(files[0].read_text()), files[1].read_text()


def by_name(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["nodeid"].split("::")[-1]: c for c in data["checks"]}


def check_content(data: dict[str, Any], markdown: str) -> None:
    checks = by_name(data)
    assert {k: v["status"] for k, v in checks.items()} == {
        "test_pass": "pass", "test_fail": "fail", "test_xfail": "xfail", "test_xpass": "xpass", "test_skip": "skip",
        "test_setup_error": "fail", "test_latency": "pass"}
    assert "one is not two" in checks["test_fail"]["reason"]
    assert checks["test_xfail"]["reason"] == "known bug #27614"
    assert checks["test_skip"]["reason"] == "no GPU here"
    assert checks["test_setup_error"]["reason"].startswith("error in setup: RuntimeError: server did not start")
    assert checks["test_pass"]["notes"] == {"prompt_fingerprint": "abc123def456", "prompt_tokens": 257}
    assert data["summary"] == {"fail": 2, "xpass": 1, "xfail": 1, "skip": 1, "pass": 2}
    assert set(data["versions"]) >= {"sglang", "torch", "transformers"} and data["versions"]["sglang"]
    assert [m["id"] for m in data["models"]] == ["micro-dense", "micro-thinking", "micro-moe", "micro-vl"]
    assert data["launches"] and all(x["startup_seconds"] == 12.5 and x["config"] == "micro-dense"
                                    for x in data["launches"])
    # the time split: per launch 2 s waited for, 10.5 s hidden behind tests (summed over xdist's workers)
    split, workers = data["time_split"], len(data["launches"])
    assert (split["launches"], split["planned"], split["startup_total_s"], split["launching_s"],
            split["launching_hidden_s"]) == (workers, 0, 12.5 * workers, 2.0 * workers, 10.5 * workers), split
    assert split["wall_s"] >= 0 and split["testing_s"] >= 0 and split["idle_s"] >= 0
    assert "## Time split" in markdown
    [row] = data["latency"]
    assert (row["config"], row["gpu"], row["mean_ttft_ms"], row["verdict"]) == (
        "micro-dense", "NVIDIA H100 80GB HBM3", 15.7, "reported (no budget)")
    [fid] = data["fidelity"]
    assert (fid["ttft"], fid["tpot"], fid["normalized"], fid["plain_tpot"]) == (1.01, 0.998, True, 1.123)
    for text in ("## Fidelity", "| micro-dense---enable-metrics | NVIDIA H100 80GB HBM3 | 4 | 1.010 | 0.998 | "
                 "server-normalized | 1.104 | 1.123 | pass |",
                 "# pytest-lfm qualification report", "| sglang |", "## Runtime launches", "### Not passing",
                 "known bug #27614", "## Latency", "| micro-dense | default | NVIDIA H100 80GB HBM3 | 1 | 15.700 |",
                 "abc123def456"):
        assert text in markdown, text


def test_report_json_and_markdown(pytester: pytest.Pytester) -> None:
    result, out = run_suite(pytester)
    result.assert_outcomes(passed=2, failed=1, errors=1, skipped=1, xfailed=1, xpassed=1)
    data, markdown = load(out)
    check_content(data, markdown)
    assert [x["worker"] for x in data["launches"]] == ["main"]
    result.stdout.fnmatch_lines(["*pytest-lfm qualification*", "*report: *lfm-report-*.json"])


def test_with_xdist_only_the_controller_writes_and_launches_travel(pytester: pytest.Pytester) -> None:
    result, out = run_suite(pytester, "-n", "2")
    result.assert_outcomes(passed=2, failed=1, errors=1, skipped=1, xfailed=1, xpassed=1)
    data, markdown = load(out)  # exactly one JSON and one Markdown file
    check_content(data, markdown)
    assert data["launches"] and {x["worker"] for x in data["launches"]} <= {"gw0", "gw1"}


def test_junitxml_properties(pytester: pytest.Pytester) -> None:
    run_suite(pytester, "--junitxml", "junit.xml")
    root = ET.parse(pytester.path / "junit.xml").getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    assert suite is not None
    props = {p.get("name"): p.get("value") for p in suite.findall("./properties/property")}
    assert props["lfm_fail"] == "2" and props["lfm_pass"] == "2" and props["lfm_sglang_version"]
    assert props["lfm_startup_s[server:micro-dense]"] == "12.5"
    assert props["lfm_latency[test_suite.py::test_latency].mean_ttft_ms"] == "15.7"
    assert props["lfm_fidelity[test_suite.py::test_latency].tpot"] == "0.998"
    case = next(c for c in suite.iter("testcase") if c.get("name") == "test_pass")
    case_props = {p.get("name"): p.get("value") for p in case.iter("property")}
    assert case_props["lfm:prompt_fingerprint"] == "abc123def456"


def test_no_report_dir_no_files(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest(*PLUGIN_ARGS, "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert not list(pytester.path.glob("**/lfm-report-*"))


def test_plugin_registers_the_report(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
        def test_registered(pytestconfig):
            from pytest_lfm.report import PLUGIN_NAME, Report
            assert isinstance(pytestconfig.pluginmanager.get_plugin(PLUGIN_NAME), Report)
    """)
    pytester.runpytest(*PLUGIN_ARGS, "-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_note_needs_json_values() -> None:
    item: Any = SimpleNamespace(user_properties=[])
    report.note(item, "k", (1, 2))
    assert item.user_properties == [("lfm:k", [1, 2])]
    with pytest.raises(TypeError, match="JSON-serializable"):
        report.note(item, "bad", object())
    assert report.notes_of([("lfm:a", 1), ("other", 2), ("lfm:a", 3)]) == {"a": 3}


def test_scripted_turn_table_counts_exact_turns_per_checkpoint() -> None:
    from pytest_lfm.report import Check, scripted_turn_rows

    def turn(model: str, tid: str, status: str) -> Check:
        return Check(f"t[{model}-{tid}]", status, notes={"scripted_turn": {"checkpoint": model, "turn": tid}})

    rows = scripted_turn_rows([turn("micro-vl", "a", "pass"), turn("micro-vl", "b", "fail"),
                               turn("micro-dense", "a", "pass"), turn("micro-dense", "c", "skip"),
                               Check("t::other", "fail")])
    assert rows == [{"checkpoint": "micro-dense", "turns": 1, "exact": 1, "missed": [], "percent": 100.0},
                    {"checkpoint": "micro-vl", "turns": 2, "exact": 1, "missed": ["b"], "percent": 50.0}]


def test_grammar_table_names_each_configurations_backend_and_its_passes() -> None:
    from pytest_lfm.report import Check, grammar_rows, render_markdown

    def check(config: str, status: str, backend: str | None = "xgrammar") -> Check:
        notes = {"config": config, **({"grammar_backend": backend} if backend else {})}
        return Check(f"t[{config}-{status}]", status, notes=notes)

    rows = grammar_rows([check("micro-vl", "pass"), check("micro-dense", "pass"), check("micro-dense", "fail"),
                         check("micro-dense", "pass", None), check("micro-moe", "pass", "outlines")])
    assert rows == [{"config": "micro-dense", "grammar_backend": "xgrammar", "checks": 2, "passed": 1},
                    {"config": "micro-moe", "grammar_backend": "outlines", "checks": 1, "passed": 1},
                    {"config": "micro-vl", "grammar_backend": "xgrammar", "checks": 1, "passed": 1}]
    data = {"created": "c", "host": "h", "duration_s": 1.0, "args": [], "versions": {}, "gpus": [], "models": [],
            "launches": [], "summary": {"pass": 1}, "checks": [], "latency": [], "grammar": rows}
    assert "| micro-moe | outlines | 1 | 1 |" in render_markdown(data)


def test_a_test_interrupted_after_its_setup_is_not_reported_as_passed(pytester: pytest.Pytester) -> None:
    # seen on the H100: SIGINT at the run limit arrived while the float16 probe's server was starting, and the
    # probe (setup passed, no call phase) was written as "pass"
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_suite="def test_first(): pass\ndef test_stopped(): raise KeyboardInterrupt\n")
    out = pytester.path / "reports"
    pytester.runpytest_subprocess(*PLUGIN_ARGS, "-p", "no:cacheprovider", "--lfm-report", str(out))
    data, _ = load(out)
    checks = by_name(data)
    assert checks["test_first"]["status"] == "pass"
    assert (checks["test_stopped"]["status"], checks["test_stopped"]["reason"]) == (
        "fail", "not finished: the run was interrupted before this test ran")


@pytest.mark.parametrize("source", ["command line --lfm-report", "environment LFM_REPORT"])
def test_a_report_dir_that_cannot_be_made_stops_the_run_before_it_starts(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, source: str,
) -> None:
    # a file where the directory should be: the run used to pass, then end in a traceback and exit 1
    pytester.makefile("", blocker="not a directory")
    pytester.makepyfile("def test_x(): pass")
    args = ["--lfm-report", "blocker/reports"] if source.startswith("command line") else []
    if not args:
        monkeypatch.setenv("LFM_REPORT", "blocker/reports")
    result = pytester.runpytest(*PLUGIN_ARGS, "-p", "no:cacheprovider", *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([f"*lfm-report = 'blocker/reports' (from {source}) cannot hold the report (*"
                                 "Pass a directory this user can create and write to*"])
    result.stdout.no_fnmatch_line("*passed*")


def test_a_report_dir_is_made_at_configure_time(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_x(): pass")
    pytester.runpytest(*PLUGIN_ARGS, "-p", "no:cacheprovider", "--lfm-report", "a/b", "--collect-only")
    assert (pytester.path / "a" / "b").is_dir()


def test_runs_that_start_in_the_same_second_keep_both_reports(pytester: pytest.Pytester) -> None:
    # two runs writing into one directory used to share a name with one-second resolution: the later overwrote
    started = 1767225600.25
    pytester.makeconftest(f"""
def pytest_configure(config):
    config.pluginmanager.get_plugin("lfm-report").started = {started}
""")
    out = pytester.path / "reports"
    for n in (1, 2):
        pytester.makepyfile(f"def test_run_{n}(): pass")
        pytester.runpytest(*PLUGIN_ARGS, "-p", "no:cacheprovider", "--lfm-report", str(out)).assert_outcomes(passed=1)
    files = sorted(out.iterdir())
    stem = "lfm-report-" + dt.datetime.fromtimestamp(started).strftime("%Y%m%d-%H%M%S")
    assert len(files) == 4 and all(f.name.startswith(stem) for f in files), files
    runs = {c["nodeid"].split("::")[-1] for f in files if f.suffix == ".json"
            for c in json.loads(f.read_text())["checks"]}
    assert runs == {"test_run_1", "test_run_2"}

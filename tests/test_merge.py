"""`pytest-lfm merge A.json B.json -o QUALIFICATION.json`: the reports of one qualification run in parts as one."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from pytest_lfm import cli
from pytest_lfm.report import SCHEMA_VERSION
from pytest_lfm.report.compare import ReportError, compare
from pytest_lfm.report.merge import merge, merge_files

GPU_RUNS = Path(__file__).resolve().parents[1] / "docs" / "gpu-runs"


def check(nodeid: str, status: str = "pass", **notes: Any) -> dict[str, Any]:
    return {"nodeid": nodeid, "status": status, "reason": "", "duration_s": 0.5, "notes": notes}


def model(model_id: str, *launch_args: str) -> dict[str, Any]:
    return {"id": model_id, "family": "dense", "capabilities": ["chat"], "chat_template": "lfm2",
            "launch_args": list(launch_args)}


def part(host: str, model_id: str, checks: list[dict[str, Any]], *, created: str = "2026-12-01T10:00:00+00:00",
         duration_s: float = 100.0, sglang: str = "0.5.17", torch: str = "2.11.0", **extra: Any) -> dict[str, Any]:
    """A report as one run writes it (``--lfm-model model_id`` on ``host``)."""
    return {
        "schema": 1, "created": created, "duration_s": duration_s, "host": host,
        "args": ["conformance", "--lfm-model", model_id, "--lfm-report", "report"],
        "versions": {"sglang": sglang, "torch": torch, "python": "3.12.3"},
        "gpus": [{"index": 0, "name": "NVIDIA H200", "memory_total_mib": 143771}],
        "settings": {"models": [model_id], "dtypes": ["bfloat16"], "base_url": None, "server_args": []},
        "models": [model(model_id, "--tool-call-parser", "lfm2")],
        "launches": [{"kind": "server", "config": model_id, "model": model_id, "args": [], "gpus": [0],
                      "startup_seconds": 30.0, "error": None, "worker": "main"}],
        "summary": {}, "checks": checks, "latency": [], "fidelity": [], "scripted_turns": [], **extra}


def latency(config: str, ttft: float) -> dict[str, Any]:
    return {"config": config, "profile": "default", "gpu": "NVIDIA H200", "concurrency": 1,
            "figures": {"mean_ttft_ms": ttft, "mean_tpot_ms": 1.0, "mean_itl_ms": 1.0, "mean_e2e_ms": 130.0,
                        "output_tok_s": 900.0, "failed": 0}, "budget": None, "verdict": "reported", "verdicts": []}


DENSE = part("h200-a", "micro-dense", [
    check("test_chat.py::t[micro-dense]"),
    check("test_tools.py::t[micro-dense]", "xfail"),
    check("test_corpus.py::case1"),  # not parametrized by model: every part runs it
    check("test_latency.py::t[micro-dense]", latency=latency("micro-dense", 15.0)),
    check("test_micro_script.py::t[micro-dense-a]", scripted_turn={"checkpoint": "micro-dense", "turn": "a"}),
], created="2026-12-01T10:05:00+00:00", duration_s=300.0)
MOE = part("h200-b", "micro-moe", [
    check("test_corpus.py::case1"),
    check("test_chat.py::t[micro-moe]", "fail"),
    check("test_latency.py::t[micro-moe]", latency=latency("micro-moe", 20.0)),
    check("test_micro_script.py::t[micro-moe-a]", "fail", scripted_turn={"checkpoint": "micro-moe", "turn": "a"}),
], created="2026-12-01T10:00:00+00:00", duration_s=200.0)


def merged_pair(**changes: Any) -> dict[str, Any]:
    return merge([("dense.json", {**DENSE, **changes}), ("moe.json", MOE)])


def test_checks_are_the_union_by_node_id_and_the_tables_are_computed_again() -> None:
    merged = merge([("dense.json", DENSE), ("moe.json", MOE)])
    assert merged["schema"] == SCHEMA_VERSION
    ids = [c["nodeid"] for c in merged["checks"]]
    assert ids == sorted(ids) and len(ids) == 8 and ids.count("test_corpus.py::case1") == 1
    assert merged["summary"] == {"fail": 2, "xpass": 0, "xfail": 1, "skip": 0, "pass": 5}
    assert [(r["config"], r["mean_ttft_ms"]) for r in merged["latency"]] == [("micro-dense", 15.0),
                                                                              ("micro-moe", 20.0)]
    assert [(r["checkpoint"], r["turns"], r["exact"]) for r in merged["scripted_turns"]] == [
        ("micro-dense", 1, 1), ("micro-moe", 1, 0)]


def test_a_check_with_two_verdicts_names_both_files_and_the_id() -> None:
    moe = {**MOE, "checks": [check("test_corpus.py::case1", "fail")]}
    with pytest.raises(ReportError, match=r"test_corpus\.py::case1 is pass in dense\.json but fail in moe\.json"):
        merge([("dense.json", DENSE), ("moe.json", moe)])


def test_another_sglang_version_is_not_one_qualification() -> None:
    with pytest.raises(ReportError, match=r"the sglang version differs between the reports: '0\.5\.14' in "
                                          r"dense\.json; '0\.5\.17' in moe\.json\. .*not one qualification"):
        merged_pair(versions={"sglang": "0.5.14", "torch": "2.11.0", "python": "3.12.3"})


def test_other_package_versions_may_differ_and_are_both_shown() -> None:
    merged = merged_pair(versions={"sglang": "0.5.17", "torch": "2.10.0", "python": "3.12.3"})
    assert merged["versions"] == {"sglang": "0.5.17", "torch": "2.10.0, 2.11.0", "python": "3.12.3"}


def test_launches_are_concatenated_and_tagged_with_their_report() -> None:
    merged = merge([("dense.json", DENSE), ("moe.json", MOE)])
    assert [(x["config"], x["report"]) for x in merged["launches"]] == [("micro-dense", "dense.json"),
                                                                        ("micro-moe", "moe.json")]


def test_gpus_models_and_selections_are_unioned() -> None:
    merged = merge([("dense.json", DENSE), ("moe.json", MOE), ("dense-again.json", {**DENSE, "checks": [
        check("test_engine.py::t[micro-dense]")]})])
    assert [(g["host"], g["index"]) for g in merged["gpus"]] == [("h200-a", 0), ("h200-b", 0)]
    assert [m["id"] for m in merged["models"]] == ["micro-dense", "micro-moe"]
    assert merged["settings"] == {"models": ["micro-dense", "micro-moe"], "dtypes": ["bfloat16"], "base_url": None,
                                  "server_args": []}
    assert merged["host"] == "h200-a, h200-b"


def test_a_model_defined_differently_in_two_parts_is_an_error() -> None:
    other = {**MOE, "models": [model("micro-dense", "--tool-call-parser", "lfm2", "--max-total-tokens", "99")]}
    with pytest.raises(ReportError, match=r"model micro-dense is defined differently in dense\.json .* in moe\.json"):
        merge([("dense.json", DENSE), ("moe.json", other)])


def test_server_args_must_agree_and_base_urls_are_listed() -> None:
    settings = {**DENSE["settings"], "server_args": ["--mem-fraction-static", "0.5"]}
    with pytest.raises(ReportError, match=r"settings\.server_args differs .*--lfm-server-args"):
        merged_pair(settings=settings)
    merged = merge([("a.json", {**DENSE, "settings": {**DENSE["settings"], "base_url": "http://a:30000"}}),
                    ("b.json", {**MOE, "settings": {**MOE["settings"], "base_url": "http://b:30000"}})])
    assert merged["settings"]["base_url"] == "http://a:30000, http://b:30000"


def test_wall_time_is_the_longest_part_and_the_sum_is_kept() -> None:
    merged = merge([("dense.json", DENSE), ("moe.json", MOE)])
    assert merged["duration_s"] == 300.0 and merged["merged"]["duration_sum_s"] == 500.0
    assert merged["created"] == "2026-12-01T10:00:00+00:00"  # the earliest part's start


def test_time_splits_are_summed_field_by_field() -> None:
    dense = {**DENSE, "time_split": {"launching_s": 40.0, "launching_hidden_s": 10.0, "testing_s": 250.0,
                                     "idle_s": 10.0, "wall_s": 300.0}}
    moe = {**MOE, "time_split": {"launching_s": 30.5, "testing_s": 160.0, "idle_s": 9.5, "wall_s": 200.0}}
    merged = merge([("dense.json", dense), ("moe.json", moe)])
    assert merged["time_split"] == {"launching_s": 70.5, "launching_hidden_s": 10.0, "testing_s": 410.0,
                                    "idle_s": 19.5, "wall_s": 500.0}
    partial = merge([("dense.json", dense), ("moe.json", MOE)])  # a part that writes none counts nothing
    assert partial["time_split"] == dense["time_split"]
    assert [p["time_split"] for p in partial["merged"]["parts"]] == [dense["time_split"], None]
    assert "time_split" not in merge([("dense.json", DENSE), ("moe.json", MOE)])
    with pytest.raises(ReportError, match=r"moe\.json: 'time_split' missing or not as a run writes it"):
        merge([("dense.json", dense), ("moe.json", {**MOE, "time_split": {"wall_s": "200"}})])


def test_the_parts_are_recorded() -> None:
    parts = merge([("dense.json", DENSE), ("moe.json", MOE)])["merged"]["parts"]
    assert [(p["file"], p["host"], p["args"], p["duration_s"]) for p in parts] == [
        ("dense.json", "h200-a", DENSE["args"], 300.0), ("moe.json", "h200-b", MOE["args"], 200.0)]
    assert parts[1]["versions"] == MOE["versions"] and parts[1]["summary"] == MOE["summary"]


def test_a_merged_report_merges_again_with_its_parts() -> None:
    moe = {**MOE, "versions": {**MOE["versions"], "torch": "2.10.0"}}
    vl = part("h200-b", "micro-vl", [check("test_chat.py::t[micro-vl]")], torch="2.10.0")
    first = merge([("dense.json", DENSE), ("moe.json", moe)])
    again = merge([("first.json", first), ("vl.json", vl)])
    assert [p["file"] for p in again["merged"]["parts"]] == ["dense.json", "moe.json", "vl.json"]
    assert [x["report"] for x in again["launches"]] == ["dense.json", "moe.json", "vl.json"]
    assert again["merged"]["duration_sum_s"] == 600.0 and again["duration_s"] == 300.0
    assert again["host"] == "h200-a, h200-b" and again["versions"]["torch"] == "2.11.0, 2.10.0"
    assert again == merge([("dense.json", DENSE), ("moe.json", moe), ("vl.json", vl)])


@pytest.mark.parametrize(("change", "error"), [
    ({"schema": 2}, "dense.json: is of report schema 2"),
    ({"checks": []}, "dense.json: the report holds no checks"),
    ({"launches": None}, "dense.json: 'launches' missing or not as a run writes it"),
    ({"models": [{"family": "dense"}]}, "dense.json: 'models' missing or not as a run writes it"),
    ({"created": "yesterday"}, "dense.json: 'created' is 'yesterday', not an ISO date and time"),
])
def test_incomplete_inputs_are_named(change: dict[str, Any], error: str) -> None:
    with pytest.raises(ReportError, match=re.escape(error)):
        merged_pair(**change)


def test_compare_reads_the_merged_report_like_any_other() -> None:
    merged = merge([("dense.json", DENSE), ("moe.json", MOE)])
    diff = compare(DENSE, merged)
    assert not diff.verdict_changes and diff.overlap == 1.0 and diff.shared_checks == len(DENSE["checks"])


def test_real_reports_of_one_sglang_merge(tmp_path: Path) -> None:
    # two runs on the H200 with sglang 0.5.17: all three micro models, and micro-moe + micro-vl again
    c2, c3 = (next((GPU_RUNS / "2026-12-01-h200" / run / "report").glob("*.json")) for run in ("c2-0.5.17",
                                                                                                "c3-0.5.17"))
    merged = merge_files([c2, c3])
    parts = [json.loads(path.read_text()) for path in (c2, c3)]
    assert len(merged["checks"]) == len({c["nodeid"] for p in parts for c in p["checks"]})
    assert len(merged["launches"]) == sum(len(p["launches"]) for p in parts)
    assert all(merged["summary"][s] == sum(p["summary"][s] for p in parts) for s in merged["summary"])  # disjoint
    for path in (c2, c3):
        assert not compare(path, merged).verdict_changes


def write(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data))
    return path


def test_cli_merge_writes_json_and_markdown(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    dense, moe = write(tmp_path / "dense.json", DENSE), write(tmp_path / "moe.json", MOE)
    out = tmp_path / "out" / "QUALIFICATION.json"
    assert cli.main(["merge", str(dense), str(moe), "-o", str(out)]) == 0
    assert f"merged 2 reports (8 checks: 2 fail, 1 xfail, 5 pass) into {out} and {out.with_suffix('.md')}" in \
        capsys.readouterr().out
    merged = json.loads(out.read_text())
    assert merged == merge([(str(dense), DENSE), (str(moe), MOE)])
    markdown = out.with_suffix(".md").read_text()
    for text in ("2026-12-01T10:00:00+00:00 on h200-a, h200-b, 300.0 s; merged from 2 reports (500.0 s in all)",
                 "## Merged reports", f"| {dense} | h200-a | 2026-12-01T10:05:00+00:00 | 300.0 | pytest conformance "
                 "--lfm-model micro-dense --lfm-report report |", "## Verdicts"):
        assert text in markdown, text
    assert cli.main(["compare", str(dense), str(out), "--same-verdicts"]) == 0


@pytest.mark.parametrize("case", ["missing", "other-schema", "conflict", "twice", "not-json-output"])
def test_cli_merge_bad_input_exits_2_naming_the_file(case: str, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    dense = write(tmp_path / "dense.json", DENSE)
    other = tmp_path / "other.json"
    output = tmp_path / "q.json"
    expected = {
        "missing": f"{other}: no such file; pass the JSON that --lfm-report DIR writes",
        "other-schema": f"{other}: is of report schema 2",
        "conflict": f"test_chat.py::t[micro-dense] is pass in {dense} but fail in {other}",
        "twice": f"{tmp_path}/sub/../dense.json: given twice (also as {dense})",
        "not-json-output": f"-o {tmp_path / 'q.md'}: name a .json file",
    }[case]
    if case == "other-schema":
        write(other, {**MOE, "schema": 2})
    elif case == "conflict":
        write(other, {**MOE, "checks": [check("test_chat.py::t[micro-dense]", "fail")]})
    elif case == "twice":
        (tmp_path / "sub").mkdir()
        other = tmp_path / "sub" / ".." / "dense.json"
    elif case == "not-json-output":
        write(other, MOE)
        output = tmp_path / "q.md"
    assert cli.main(["merge", str(dense), str(other), "-o", str(output)]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("pytest-lfm merge: ") and expected in line
    assert not output.exists() and not output.with_suffix(".md").exists()

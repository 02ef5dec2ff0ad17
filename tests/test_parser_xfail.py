"""The parser corpus xfails a known sglang bug only below the release the corpus records as fixing it (``fixed_in``)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytest.importorskip(
    "sglang.srt.function_call.lfm2_detector",
    reason="the parser corpus needs sglang's Lfm2Detector; it is not importable here",
)

from pytest_lfm.conformance import test_parser_corpus as corpus

from pytest_lfm.checks import known_failure_marks

FIXED = "pythonic-unary-plus"  # dropped by sglang 0.5.17, parsed by 0.5.23 (sglang #34237)
OPEN = "text-after-call"  # sglang #40295, no fixed_in: xfailed on every version
# Wrong on sglang 0.5.14 (H100 run of 2026-11-25), right on 0.5.17 and 0.5.23: the checks xfailed below 0.5.17.
FIXED_0517 = {
    "pythonic-json-literals": ("nonstream", "stream"),  # sglang #27614
    "pythonic-dotted-name": ("nonstream", "stream"),  # sglang #27614
    "empty-call-list": ("nonstream",),  # no upstream issue known
}
CORPUS_DIR = Path(corpus.__file__).parent


def _case(case_id: str) -> corpus.Case:
    return next(case for case in corpus.CASES if case.id == case_id)


def _marks(case: corpus.Case, check: str, sglang: str) -> list[list[pytest.MarkDecorator]]:
    """The marks of one check of a case, once per parametrization (the whole output, or each chunk size)."""
    if check == "nonstream":
        return [known_failure_marks(case.xfail.get(check), None, sglang)]
    return [known_failure_marks(case.xfail.get(check), size, sglang) for size in corpus.CHUNK_SIZES]


def test_the_fixed_bug_records_its_issue_and_release() -> None:
    for check in ("nonstream", "stream"):
        entry = _case(FIXED).xfail[check]
        assert entry["fixed_in"] == "0.5.23"
        assert entry["issue"].startswith("sglang #34237")


@pytest.mark.parametrize("sglang", ["0.5.17", "0.5.22", "0.5.23rc1"])
def test_below_fixed_in_the_case_is_xfailed_whole_and_streamed(sglang: str) -> None:
    case = _case(FIXED)
    marks = [known_failure_marks(case.xfail.get("nonstream"), None, sglang)]
    marks += [known_failure_marks(case.xfail.get("stream"), size, sglang) for size in corpus.CHUNK_SIZES]
    for mark in marks:
        assert len(mark) == 1
        assert mark[0].name == "xfail"
        assert mark[0].kwargs["strict"] is False
        assert mark[0].kwargs["reason"].startswith(f"sglang {sglang}: sglang #34237")
        assert "fixed in sglang 0.5.23" in mark[0].kwargs["reason"]


@pytest.mark.parametrize("sglang", ["0.5.23", "0.5.23.post1", "0.6.0"])
def test_at_or_above_fixed_in_the_case_is_not_xfailed(sglang: str) -> None:
    case = _case(FIXED)
    assert known_failure_marks(case.xfail.get("nonstream"), None, sglang) == []
    assert all(known_failure_marks(case.xfail.get("stream"), size, sglang) == [] for size in corpus.CHUNK_SIZES)


def test_a_bug_without_fixed_in_stays_xfailed_on_any_version() -> None:
    (mark,) = known_failure_marks(_case(OPEN).xfail.get("nonstream"), None, "99.0")
    assert "sglang #40295" in mark.kwargs["reason"]


@pytest.mark.parametrize(("sglang", "xfail_marked"), [("0.5.17", 10), ("0.5.23", 0)])
def test_the_corpus_run_applies_the_mark_from_the_installed_version(
    pytester: pytest.Pytester, sglang: str, xfail_marked: int,
) -> None:
    """End to end: the corpus module reads sglang's version through importlib.metadata at collection; 10 = the
    whole-output test plus 9 chunk sizes of the streamed one (the index test has no entry for this case)."""
    for name in ("test_parser_corpus.py", "parser_corpus.json"):
        shutil.copy(CORPUS_DIR / name, pytester.path / name)
    pytester.makeconftest(f"""
        from importlib import metadata

        _version = metadata.version
        metadata.version = lambda name: {sglang!r} if name == "sglang" else _version(name)
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:lfm", "-rxX", "-k", FIXED)
    outcomes = result.parseoutcomes()
    assert outcomes.get("xfailed", 0) + outcomes.get("xpassed", 0) == xfail_marked, result.stdout.str()
    assert outcomes.get("passed", 0) + outcomes.get("failed", 0) == 19 - xfail_marked, result.stdout.str()
    if xfail_marked:
        result.stdout.fnmatch_lines([f"*sglang {sglang}: sglang #34237*fixed in sglang 0.5.23*"])


def test_the_bugs_fixed_in_0517_record_their_release_and_upstream_reference() -> None:
    for case_id, checks in FIXED_0517.items():
        case = _case(case_id)
        assert sorted(case.xfail) == sorted(checks), case_id
        for check in checks:
            entry = case.xfail[check]
            assert entry["fixed_in"] == "0.5.17"
            assert "chunks" not in entry  # every chunk size failed on 0.5.14
            if case_id.startswith("pythonic-"):
                assert entry["issue"].startswith("sglang #27614"), case_id
            else:
                assert "#" not in entry["issue"], case_id


@pytest.mark.parametrize("sglang", ["0.5.10", "0.5.14", "0.5.16.post1", "0.5.17rc1"])
def test_below_0517_the_checks_that_sglang_0514_failed_are_xfailed(sglang: str) -> None:
    for case_id, checks in FIXED_0517.items():
        case = _case(case_id)
        for check in checks:
            for mark in _marks(case, check, sglang):
                assert len(mark) == 1, (case_id, check)
                assert mark[0].kwargs["strict"] is False
                assert mark[0].kwargs["reason"].startswith(f"sglang {sglang}: {case.xfail[check]['issue']}: ")
                assert mark[0].kwargs["reason"].endswith("; fixed in sglang 0.5.17")
        if case.calls:  # the index check passed on 0.5.14 (no calls came out, so none was misindexed)
            assert all(mark == [] for mark in _marks(case, "index", sglang))


@pytest.mark.parametrize("sglang", ["0.5.17", "0.5.22", "0.5.23", "0.6.0"])
def test_from_0517_the_checks_that_sglang_0514_failed_are_not_xfailed(sglang: str) -> None:
    for case_id, checks in FIXED_0517.items():
        for check in checks:
            assert all(mark == [] for mark in _marks(_case(case_id), check, sglang)), (case_id, check)


@pytest.mark.parametrize(("sglang", "xfail_marked"), [("0.5.14", 21), ("0.5.17", 0), ("0.5.23", 0)])
def test_the_corpus_run_xfails_what_sglang_0514_failed(
    pytester: pytest.Pytester, sglang: str, xfail_marked: int,
) -> None:
    """End to end on the installed sglang: 21 = the checks that failed on sglang 0.5.14 (whole and 9 chunk sizes of
    pythonic-json-literals and pythonic-dotted-name, whole empty-call-list); 48 = those cases' checks (19 + 19 + 10:
    empty-call-list has no index check)."""
    for name in ("test_parser_corpus.py", "parser_corpus.json"):
        shutil.copy(CORPUS_DIR / name, pytester.path / name)
    pytester.makeconftest(f"""
        from importlib import metadata

        _version = metadata.version
        metadata.version = lambda name: {sglang!r} if name == "sglang" else _version(name)
    """)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:lfm", "-rxX",
                                           "-k", " or ".join(FIXED_0517))
    outcomes = result.parseoutcomes()
    assert outcomes.get("xfailed", 0) + outcomes.get("xpassed", 0) == xfail_marked, result.stdout.str()
    assert outcomes.get("passed", 0) + outcomes.get("failed", 0) == 48 - xfail_marked, result.stdout.str()
    if xfail_marked:
        result.stdout.fnmatch_lines([f"*sglang {sglang}: sglang #27614*fixed in sglang 0.5.17*"])

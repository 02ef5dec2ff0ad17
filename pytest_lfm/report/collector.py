"""The report's session object: :class:`Report`, registered as a plugin by :func:`register`, collects each test's
verdict and notes (:mod:`pytest_lfm.report.notes`, carried by the test reports, so the xdist controller sees them
too), the runtime launches and time split of every worker (through xdist's ``workeroutput``), and at the end of the
session the controller writes one JSON and one Markdown file into ``--lfm-report DIR``.
"""

from __future__ import annotations

import datetime as dt
import json
import platform
import socket
import time
from collections.abc import Mapping
from dataclasses import asdict
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest
from _pytest.junitxml import xml_key

from pytest_lfm.matrix import LaunchConfig
from pytest_lfm.recording.exchange import node_key
from pytest_lfm.report.markdown import latency_table, render_markdown
from pytest_lfm.report.notes import CONFIG, MODEL, note, notes_of
from pytest_lfm.report.schema import (
    KEY_FIGURES,
    SCHEMA_VERSION,
    SPLIT_FIELDS,
    STATUSES,
    Check,
    fidelity_rows,
    grammar_rows,
    latency_rows,
    scripted_turn_rows,
)
from pytest_lfm.runtime import hosts
from pytest_lfm.state import RUN

PLUGIN_NAME = "lfm-report"
_LAUNCHES = "lfm_launches"
_SPLIT = "lfm_time_split"
_VERSIONED = ("sglang", "torch", "transformers", "pytest-lfm", "pytest")


def _reason(report: pytest.TestReport) -> str:
    if report.skipped and isinstance(report.longrepr, (tuple, list)):
        return str(report.longrepr[2]).removeprefix("Skipped: ")
    crash = getattr(report.longrepr, "reprcrash", None)
    message = getattr(crash, "message", None)
    if message:
        return str(message)[:500]
    lines = [line for line in report.longreprtext.splitlines() if line.strip()]
    return lines[-1][:500] if lines else ""


def verdict(report: pytest.TestReport) -> tuple[str, str] | None:
    """(status, reason) that this phase's report decides, or None when the phase does not change the verdict."""
    wasxfail = getattr(report, "wasxfail", None)
    if report.skipped:
        return ("xfail", wasxfail or _reason(report)) if wasxfail is not None else ("skip", _reason(report))
    if report.failed:
        phase = "" if report.when == "call" else f"error in {report.when}: "
        return "fail", phase + _reason(report)
    if report.when == "call" and wasxfail is not None:
        return "xpass", wasxfail
    return None


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for dist in _VERSIONED:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = None
    out["python"] = platform.python_version()
    return out


def _gpus() -> list[dict[str, Any]]:
    try:
        return [{"index": g.index, "name": g.name, "memory_total_mib": g.memory_total_mib} for g in hosts.list_gpus()]
    except Exception as exc:  # the report must not fail the run because nvidia-smi misbehaves
        return [{"error": f"{type(exc).__name__}: {exc}"}]


def _is_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


class Report:
    """Collects verdicts, notes and launches during the session; the controller writes the files at its end."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.checks: dict[str, Check] = {}
        self.called: set[str] = set()  # tests whose call phase reported (an interrupted run stops before)
        self.launches: list[dict[str, Any]] = []
        self.splits: list[dict[str, Any]] = []
        self.started = time.time()
        self.started_monotonic = time.monotonic()
        self.paths: list[Path] = []

    # ------------------------------------------------------------ collecting

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, items: list[pytest.Item]) -> None:
        """Note each test's runtime configuration, so the report can group checks by it."""
        for item in items:
            callspec = getattr(item, "callspec", None)
            launch = callspec.params.get("lfm_launch") if callspec else None
            if isinstance(launch, LaunchConfig):
                note(item, CONFIG, launch.id)
                note(item, MODEL, launch.model.id)

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        nodeid = node_key(report.nodeid)  # the same check with or without -n (xdist's "@<group>" suffix)
        check = self.checks.setdefault(nodeid, Check(nodeid))
        if report.when == "call":
            self.called.add(nodeid)
        check.duration_s = round(check.duration_s + report.duration, 3)
        check.notes.update(notes_of(report.user_properties))
        decided = verdict(report)
        # the first phase that fails, skips or xfails decides; an error in teardown still fails a passed test
        if decided is not None and (check.status == "pass" or (check.status == "xpass" and decided[0] == "fail")):
            check.status, check.reason = decided

    def _local_launches(self) -> list[dict[str, Any]]:
        pool = self.config.stash[RUN].pool
        if pool is None:
            return []
        worker = getattr(self.config, "workerinput", {}).get("workerid", "main")
        return [{**asdict(launch), "worker": worker} for launch in pool.launches]

    def _local_split(self) -> dict[str, Any] | None:
        """How this process's wall time went (the pool's waits and startups against the tests' durations)."""
        pool = self.config.stash[RUN].pool
        testing = sum(c.duration_s for c in self.checks.values())
        wall = time.monotonic() - self.started_monotonic
        if pool is None:  # nothing launched here (--lfm-base-url, --lfm-replay, no GPU)
            return {"wall_s": round(wall, 1), "launching_s": 0.0, "launching_hidden_s": 0.0, "startup_total_s": 0.0,
                    "testing_s": round(testing, 1), "idle_s": round(max(0.0, wall - testing), 1), "launches": 0,
                    "planned": 0}
        return pool.time_split(testing, wall)

    def _plan(self) -> list[dict[str, Any]]:
        return [{"kind": p.kind, "config": p.config.id, "tests": len(p.tests), "quiet_tests": p.quiet_tests}
                for p in self.config.stash[RUN].plan]

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: object | None) -> None:
        """xdist controller: a worker finished; keep its launches and time split."""
        output = getattr(node, "workeroutput", {})
        self.launches += output.get(_LAUNCHES, [])
        if output.get(_SPLIT):
            self.splits.append(output[_SPLIT])

    def _time_split(self) -> dict[str, Any] | None:
        """The run's time split: this process's, or under xdist the workers' summed (wall: the controller's)."""
        parts = [*self.splits, *filter(None, [self._local_split()])]
        if not parts:
            return None
        merged: dict[str, Any] = {k: round(sum(float(p.get(k) or 0) for p in parts), 1) for k in SPLIT_FIELDS}
        merged["wall_s"] = round(time.monotonic() - self.started_monotonic, 1)
        merged["launches"] = sum(int(p.get("launches") or 0) for p in parts)
        merged["planned"] = sum(int(p.get("planned") or 0) for p in parts)
        merged["workers"] = len(parts)
        return merged

    # ------------------------------------------------------------ writing (controller only)

    def data(self) -> dict[str, Any]:
        """The report as a JSON-able dict."""
        settings = self.config.stash[RUN].settings
        checks = sorted(self.checks.values(), key=lambda c: c.nodeid)
        for check in checks:
            if check.status == "pass" and check.nodeid not in self.called:
                check.status, check.reason = "fail", "not finished: the run was interrupted before this test ran"
        summary = {status: sum(1 for c in checks if c.status == status) for status in STATUSES}
        return {
            "schema": SCHEMA_VERSION,
            "created": dt.datetime.fromtimestamp(self.started, dt.timezone.utc).isoformat(timespec="seconds"),
            "duration_s": round(time.time() - self.started, 1),
            "host": socket.gethostname(),
            "args": list(self.config.invocation_params.args),
            "versions": _versions(),
            "gpus": _gpus(),
            "settings": {"models": list(settings.models), "dtypes": list(settings.dtypes),
                         "base_url": settings.base_url, "server_args": list(settings.server_args)},
            "models": [{"id": m.id, "family": m.family, "capabilities": sorted(m.capabilities),
                        "chat_template": m.chat_template, "launch_args": list(m.launch_args)}
                       for m in self.config.stash[RUN].selected],
            "level": settings.level,
            "plan": self._plan(),
            "launches": [*self.launches, *self._local_launches()],
            "time_split": self._time_split(),
            "summary": summary,
            "checks": [asdict(c) for c in checks],
            "latency": latency_rows(checks),
            "fidelity": fidelity_rows(checks),
            "scripted_turns": scripted_turn_rows(checks),
            "grammar": grammar_rows(checks),
        }

    @pytest.hookimpl(tryfirst=True)  # before junitxml writes its file: the suite properties must be in it
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if _is_worker(self.config):
            self.config.workeroutput[_LAUNCHES] = self._local_launches()  # type: ignore[attr-defined]
            self.config.workeroutput[_SPLIT] = self._local_split()  # type: ignore[attr-defined]
            return
        data = self.data()
        self._junit_properties(data)
        report_dir = self.config.stash[RUN].settings.report_dir
        if report_dir is None or not self.checks:  # nothing ran (e.g. --collect-only): no report
            return
        report_dir.mkdir(parents=True, exist_ok=True)  # checked at configure time; made again if removed since
        json_path, md_path = _claim(report_dir, "lfm-report-" + dt.datetime.fromtimestamp(self.started).strftime(
            "%Y%m%d-%H%M%S-%f"))
        json_path.write_text(json.dumps(data, indent=2) + "\n")
        md_path.write_text(render_markdown(data))
        self.paths = [json_path, md_path]

    def _junit_properties(self, data: Mapping[str, Any]) -> None:
        xml = self.config.stash.get(xml_key, None)
        if xml is None:
            return
        for dist in ("sglang", "torch", "transformers"):
            xml.add_global_property(f"lfm_{dist}_version", str(data["versions"].get(dist)))
        gpu_names = sorted({g["name"] for g in data["gpus"] if "name" in g})
        xml.add_global_property("lfm_gpu", ", ".join(gpu_names) or "none")
        for status, count in data["summary"].items():
            xml.add_global_property(f"lfm_{status}", str(count))
        for launch in data["launches"]:
            xml.add_global_property(f"lfm_startup_s[{launch['kind']}:{launch['config']}]",
                                    str(launch.get("startup_seconds")))
        for row in data["latency"]:
            for figure in KEY_FIGURES:
                xml.add_global_property(f"lfm_latency[{row['test']}].{figure}", str(row.get(figure)))
        for row in data.get("fidelity", []):
            for figure in ("ttft", "tpot"):
                xml.add_global_property(f"lfm_fidelity[{row['test']}].{figure}", str(row.get(figure)))

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        rows = latency_rows(sorted(self.checks.values(), key=lambda c: c.nodeid))
        if not rows and not self.paths:
            return
        terminalreporter.section("pytest-lfm qualification")
        for line in latency_table(rows):
            terminalreporter.write_line(line)
        for path in self.paths:
            terminalreporter.write_line(f"report: {path}")


def _claim(directory: Path, stem: str) -> tuple[Path, Path]:
    """A JSON and a Markdown path in ``directory`` named ``stem`` (else ``stem-2``, ``stem-3``, ...) that no other
    run holds: both files are created exclusively, so runs that start at the same moment never overwrite each other."""
    name, n = stem, 1
    while True:
        json_path, md_path = directory / f"{name}.json", directory / f"{name}.md"
        try:
            json_path.touch(exist_ok=False)
            try:
                md_path.touch(exist_ok=False)
            except FileExistsError:
                json_path.unlink()
                raise
            return json_path, md_path
        except FileExistsError:
            n += 1
            name = f"{stem}-{n}"


def register(config: pytest.Config) -> Report:
    """Register the report session object (once per process); call from ``pytest_configure``."""
    existing = config.pluginmanager.get_plugin(PLUGIN_NAME)
    if isinstance(existing, Report):
        return existing
    report = Report(config)
    config.pluginmanager.register(report, PLUGIN_NAME)
    return report

"""The qualification report: one JSON and one Markdown file per run, written by the xdist controller.

Suites attach facts to a test with :func:`note`; they travel with the test reports (``user_properties``), so the
controller sees them under xdist too. The :class:`Report` session object, registered as a plugin by
:func:`register`, collects each test's verdict, the notes, the runtime launches of every worker (through xdist's
``workeroutput``) and writes the files at the end of the session into ``--lfm-report DIR``.
"""

from __future__ import annotations

import datetime as dt
import json
import platform
import socket
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, is_dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from pytest_lfm.recording.exchange import node_key

NOTE_PREFIX = "lfm:"
SCHEMA_VERSION = 1
STATUSES = ("fail", "xpass", "xfail", "skip", "pass")
PLUGIN_NAME = "lfm-report"
_LAUNCHES = "lfm_launches"
_SPLIT = "lfm_time_split"
SPLIT_FIELDS = ("wall_s", "launching_s", "launching_hidden_s", "startup_total_s", "testing_s", "idle_s")
_VERSIONED = ("sglang", "torch", "transformers", "pytest-lfm", "pytest")
# latency figures shown in the tables and recorded as junitxml suite properties
KEY_FIGURES = ("mean_ttft_ms", "mean_tpot_ms", "mean_itl_ms", "mean_e2e_ms", "output_tok_s", "failed")


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


@dataclass
class Check:
    """One test's verdict in the report."""

    nodeid: str
    status: str = "pass"
    reason: str = ""
    duration_s: float = 0.0
    notes: dict[str, Any] = field(default_factory=dict)


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
    from pytest_lfm.runtime import hosts

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
        from pytest_lfm.matrix import LaunchConfig

        for item in items:
            callspec = getattr(item, "callspec", None)
            launch = callspec.params.get("lfm_launch") if callspec else None
            if isinstance(launch, LaunchConfig):
                note(item, "config", launch.id)
                note(item, "model", launch.model.id)

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
        from pytest_lfm.plugin import POOL

        pool = self.config.stash.get(POOL, None)
        if pool is None:
            return []
        worker = getattr(self.config, "workerinput", {}).get("workerid", "main")
        return [{**asdict(launch), "worker": worker} for launch in pool.launches]

    def _local_split(self) -> dict[str, Any] | None:
        """How this process's wall time went (the pool's waits and startups against the tests' durations)."""
        from pytest_lfm.plugin import POOL

        pool = self.config.stash.get(POOL, None)
        testing = sum(c.duration_s for c in self.checks.values())
        wall = time.monotonic() - self.started_monotonic
        if pool is None:  # nothing launched here (--lfm-base-url, --lfm-replay, no GPU)
            return {"wall_s": round(wall, 1), "launching_s": 0.0, "launching_hidden_s": 0.0, "startup_total_s": 0.0,
                    "testing_s": round(testing, 1), "idle_s": round(max(0.0, wall - testing), 1), "launches": 0,
                    "planned": 0}
        return pool.time_split(testing, wall)

    def _plan(self) -> list[dict[str, Any]]:
        from pytest_lfm.plugin import PLAN

        return [{"kind": p.kind, "config": p.config.id, "tests": len(p.tests), "quiet_tests": p.quiet_tests}
                for p in self.config.stash.get(PLAN, [])]

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
        from pytest_lfm.plugin import SELECTED, SETTINGS

        settings = self.config.stash[SETTINGS]
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
                       for m in self.config.stash[SELECTED]],
            "level": settings.level,
            "plan": self._plan(),
            "launches": [*self.launches, *self._local_launches()],
            "time_split": self._time_split(),
            "summary": summary,
            "checks": [asdict(c) for c in checks],
            "latency": latency_rows(checks),
            "fidelity": fidelity_rows(checks),
            "scripted_turns": scripted_turn_rows(checks),
        }

    @pytest.hookimpl(tryfirst=True)  # before junitxml writes its file: the suite properties must be in it
    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if _is_worker(self.config):
            self.config.workeroutput[_LAUNCHES] = self._local_launches()  # type: ignore[attr-defined]
            self.config.workeroutput[_SPLIT] = self._local_split()  # type: ignore[attr-defined]
            return
        data = self.data()
        self._junit_properties(data)
        from pytest_lfm.plugin import SETTINGS

        report_dir = self.config.stash[SETTINGS].report_dir
        if report_dir is None or not self.checks:  # nothing ran (e.g. --collect-only): no report
            return
        report_dir.mkdir(parents=True, exist_ok=True)  # checked at configure time; made again if removed since
        json_path, md_path = _claim(report_dir, "lfm-report-" + dt.datetime.fromtimestamp(self.started).strftime(
            "%Y%m%d-%H%M%S-%f"))
        json_path.write_text(json.dumps(data, indent=2) + "\n")
        md_path.write_text(render_markdown(data))
        self.paths = [json_path, md_path]

    def _junit_properties(self, data: Mapping[str, Any]) -> None:
        from _pytest.junitxml import xml_key

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
        for line in _latency_table(rows):
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


def latency_rows(checks: Iterable[Check]) -> list[dict[str, Any]]:
    """One row per test that noted "latency": its context, key figures and budget verdict."""
    rows = []
    for check in checks:
        lat = check.notes.get("latency")
        if not isinstance(lat, dict):
            continue
        figures = lat.get("figures", {})
        rows.append({
            "test": check.nodeid,
            "config": lat.get("config", check.notes.get("config")),
            "profile": lat.get("profile"),
            "gpu": lat.get("gpu"),
            "concurrency": lat.get("concurrency"),
            **{k: figures.get(k) for k in KEY_FIGURES},
            "budget": lat.get("budget"),
            "verdict": lat.get("verdict", "reported"),
            "verdicts": lat.get("verdicts", []),
            "status": check.status,
            "conditions": conditions(check.notes.get("quiet")),
        })
    return rows


def conditions(quiet: Any) -> str:
    """What else ran on the GPU while a figure was measured (the ``quiet`` note of the lfm_quiet fixture)."""
    if not isinstance(quiet, dict) or quiet.get("alive") is None:
        return "not known (runtime not launched here)"
    shared = "; GPU shared with other xdist workers" if quiet.get("workers_share_gpus") else ""
    paused, running = quiet.get("paused") or [], quiet["alive"]
    alone = "alone" if not running else f"beside {', '.join(running)} (not pausable)"
    return f"{alone}: nothing starting, {len(paused)} other runtime(s) paused{shared}"


def fidelity_rows(checks: Iterable[Check]) -> list[dict[str, Any]]:
    """One row per test that noted "fidelity": the judged TTFT / TPOT ratios against bench_serving (normalized by
    the server's own figures where it had them), the plain ratios of the means, and how many rounds."""
    rows = []
    for check in checks:
        fid = check.notes.get("fidelity")
        if not isinstance(fid, dict):
            continue
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
        turn = check.notes.get("scripted_turn")
        if not isinstance(turn, dict) or check.status not in ("pass", "fail"):
            continue
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


def register(config: pytest.Config) -> Report:
    """Register the report session object (once per process); call from ``pytest_configure``."""
    existing = config.pluginmanager.get_plugin(PLUGIN_NAME)
    if isinstance(existing, Report):
        return existing
    report = Report(config)
    config.pluginmanager.register(report, PLUGIN_NAME)
    return report


# ---------------------------------------------------------------- Markdown


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: Iterable[Iterable[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return lines


def _latency_table(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return []
    return _table(
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
    merged = data.get("merged")  # a report of pytest_lfm.merge: its parts' commands instead of one
    run = (f"merged from {len(merged['parts'])} reports ({merged['duration_sum_s']} s in all)" if merged
           else f"`pytest {' '.join(data['args'])}`")
    lines = [
        "# pytest-lfm qualification report", "",
        f"{data['created']} on {data['host']}, {data['duration_s']} s; {run}", "",
        *(["## Merged reports", "", *_table(["report", "host", "created", "s", "command"], (
            (p["file"], p["host"], p["created"], p["duration_s"], "pytest " + " ".join(p["args"]))
            for p in merged["parts"])), ""] if merged else []),
        "## Environment", "",
        *_table(["package", "version"], ((k, v[k]) for k in v)), "",
        "GPUs: " + (", ".join(f"{g.get('index')}: {g.get('name', g.get('error'))}" for g in data["gpus"]) or "none"),
        "",
        "Models: " + ", ".join(f"`{m['id']}`" for m in data["models"]), "",
    ]
    split = data.get("time_split")
    if split:
        lines += ["## Time split", "", *_table(
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
                  *_table(["config", "kind", "worker", "GPUs", "planned", "background", "tests", "started s",
                           "startup s", "GiB held", "error", "arguments"],
                          ((x["config"], x["kind"], x.get("worker"), ",".join(map(str, x["gpus"])),
                            x.get("planned"), x.get("background"), x.get("tests"), x.get("started_s"),
                            x.get("startup_seconds"), _gib(x.get("memory_mib")), x.get("error"), " ".join(x["args"]))
                           for x in data["launches"])), ""]
    lines += ["## Verdicts", "", *_table(list(data["summary"]), [list(data["summary"].values())]), ""]
    flagged = [c for c in data["checks"] if c["status"] in ("fail", "xpass", "xfail", "skip")]
    if flagged:
        flagged.sort(key=lambda c: STATUSES.index(c["status"]))
        lines += ["### Not passing", "",
                  *_table(["status", "check", "reason"], ((c["status"], c["nodeid"], c["reason"]) for c in flagged)),
                  ""]
    if data["latency"]:
        lines += ["## Latency (mean over requests; bench_serving definitions)", "", *_latency_table(data["latency"]),
                  ""]
    if data.get("fidelity"):
        lines += ["## Fidelity: plugin / sglang.bench_serving, same server and workload", "",
                  *_table(["config", "GPU", "rounds", "TTFT", "TPOT", "judged on", "plain TTFT", "plain TPOT",
                           "status"],
                          ((r["config"], r["gpu"], r["rounds"], r["ttft"], r["tpot"],
                            "server-normalized" if r["normalized"] else "plain", r["plain_ttft"], r["plain_tpot"],
                            r["status"]) for r in data["fidelity"])), ""]
    if data.get("scripted_turns"):
        lines += ["## Micro checkpoints: scripted turns through the runtime (temperature 0)", "",
                  *_table(["checkpoint", "turns", "exact", "percent", "missed"],
                          ((r["checkpoint"], r["turns"], r["exact"], r["percent"], ", ".join(r["missed"]) or "-")
                           for r in data["scripted_turns"])), ""]
    lines += ["## All checks", "",
              *_table(["check", "status", "s", "prompt", "tokens"],
                      ((c["nodeid"], c["status"], c["duration_s"], c["notes"].get("prompt_fingerprint"),
                        c["notes"].get("prompt_tokens")) for c in data["checks"])), ""]
    return "\n".join(lines)

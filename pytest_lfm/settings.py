"""Every pytest-lfm setting, declared once and resolved once.

Each setting ``x`` can be given as ``--lfm-x`` on the command line, ``lfm_x`` in the ini file
(``[tool.pytest.ini_options]``, ``pytest.ini``, ``tox.ini``) or ``LFM_X`` in the environment.
Precedence: command line (``--lfm-x``, then ``-o lfm_x=...``), then environment, then ini file, then the default.
"""

from __future__ import annotations

import math
import shlex
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pytest_lfm.runtime import hosts

DTYPES = ("bfloat16", "float16")
LEVELS = ("full", "quick")


@dataclass(frozen=True)
class Option:
    """One setting: its names are derived from ``name`` (``--lfm-NAME``, ``lfm_NAME``, ``LFM_NAME``)."""

    name: str
    help: str
    metavar: str
    default: str | None = None
    multiple: bool = False
    split: Callable[[str], list[str]] = field(default=lambda s: [p for p in s.split(",") if p.strip()])

    @property
    def flag(self) -> str:
        return "--lfm-" + self.name.replace("_", "-")

    @property
    def ini(self) -> str:
        return "lfm_" + self.name

    @property
    def env(self) -> str:
        return "LFM_" + self.name.upper()


OPTIONS: tuple[Option, ...] = (
    Option("model", "model to qualify: a matrix id, a family (dense, moe, vl), 'micro', 'all' or a micro "
           "checkpoint name; repeatable (default: micro, the embedded micro checkpoints)", "ID", multiple=True),
    Option("matrix", "extra model matrix TOML file added to the built-in matrices/; repeatable", "PATH",
           multiple=True),
    Option("base_url", "test a server someone else started (no launch), e.g. http://host:30000", "URL"),
    Option("server_arg", "extra argument for every sglang launch; repeatable (env/ini: shell-quoted)", "ARG",
           multiple=True, split=shlex.split),
    Option("dtype", "bfloat16, float16 or both (one server per dtype)", "DTYPE", default="bfloat16"),
    Option("launch_timeout", "seconds to wait for a server or engine to become ready", "SECONDS",
           default="600"),
    Option("gpu", "GPU indices to use, comma separated (default: all visible); xdist workers take one each",
           "LIST", multiple=True),
    Option("report", "directory for the qualification report (JSON + Markdown)", "DIR"),
    Option("record", "record every HTTP exchange with the servers into DIR", "DIR"),
    Option("replay", "answer the suites' requests from a recording in DIR (no server, no GPU)", "DIR"),
    Option("replay_missing", "under --lfm-replay, fail or skip the tests the recording lacks", "MODE",
           default="fail"),
    Option("latency_concurrency", "concurrency of the latency suite's second load level", "N", default="8"),
    Option("fidelity_rounds", "alternated rounds of the fidelity check against sglang.bench_serving (even)", "N",
           default="4"),
    Option("level", "full: the whole qualification; quick: every functional suite on one server launch per model "
           "(no dtype or profile variants, no engine, no timing or memory checks)", "LEVEL", default="full"),
)


@dataclass(frozen=True)
class Settings:
    """The resolved settings; ``sources`` says where each value came from."""

    models: tuple[str, ...] = ("micro",)
    matrix_paths: tuple[Path, ...] = ()
    base_url: str | None = None
    server_args: tuple[str, ...] = ()
    dtypes: tuple[str, ...] = ("bfloat16",)
    launch_timeout: float = 600.0
    gpus: tuple[int, ...] | None = None
    report_dir: Path | None = None
    record_dir: Path | None = None
    replay_dir: Path | None = None
    replay_missing: str = "fail"
    latency_concurrency: int = 8
    fidelity_rounds: int = 4
    level: str = "full"
    sources: dict[str, str] = field(default_factory=dict, compare=False)


def add_options(parser: pytest.Parser) -> None:
    """Declare every option on the command line and in the ini file."""
    group = parser.getgroup("lfm", "LFM2 / LFM2.5 qualification on SGLang (pytest-lfm)")
    for opt in OPTIONS:
        help_ = f"{opt.help} [ini {opt.ini}, env {opt.env}]"
        if opt.multiple:
            group.addoption(opt.flag, dest=opt.ini, action="append", metavar=opt.metavar, help=help_)
            parser.addini(opt.ini, opt.help, type="args")
        else:
            group.addoption(opt.flag, dest=opt.ini, metavar=opt.metavar, help=help_)
            parser.addini(opt.ini, opt.help, type="string", default="")


_QUOTING_FIX = "Quote it as a shell would, every quote closed, e.g. --served-model-name 'my model' --log-level warning."


def _raw(config: pytest.Config, opt: Option, environ: dict[str, str]) -> tuple[Any, str]:
    cli = config.getoption(opt.ini)
    if cli not in (None, []):
        return cli, f"command line {opt.flag}"
    # -o lfm_x=... is given on the command line: it ranks above the environment (and, empty, clears the setting)
    overridden = any(o.split("=", 1)[0] == opt.ini for o in config.getoption("override_ini") or [])
    if not overridden and environ.get(opt.env, "").strip():
        value, source = environ[opt.env], f"environment {opt.env}"
        if not opt.multiple:
            return value.strip(), source
        try:
            return opt.split(value), source
        except ValueError as exc:  # shlex: an unclosed quote or a trailing backslash
            raise _fail(opt, source, value, f"is not shell-quoted correctly ({exc})", _QUOTING_FIX) from None
    source = (f"command line -o {opt.ini}" if overridden
              else f"{config.inipath.name if config.inipath else 'ini file'} {opt.ini}")
    try:
        ini = config.getini(opt.ini)
    except (ValueError, pytest.UsageError) as exc:  # an "args" value shlex cannot split (pytest 9: a UsageError)
        raise pytest.UsageError(f"pytest-lfm: {opt.ini} (from {source}) is not shell-quoted correctly ({exc}). "
                                f"{_QUOTING_FIX}") from None
    if ini not in ("", [], None):
        return (list(ini) if opt.multiple else ini.strip()), source
    return opt.default, "default"


def _fail(opt: Option, source: str, value: object, why: str, fix: str) -> pytest.UsageError:
    return pytest.UsageError(f"pytest-lfm: {opt.flag.lstrip('-')} = {value!r} (from {source}) {why}. {fix}")


def resolve(config: pytest.Config, environ: dict[str, str]) -> Settings:
    """Resolve every option once; a bad value is a UsageError naming where it came from and the fix."""
    by_name = {opt.name: opt for opt in OPTIONS}
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for opt in OPTIONS:
        values[opt.name], sources[opt.name] = _raw(config, opt, environ)

    def listed(name: str) -> list[str]:
        raw = values[name] or []
        return [p.strip() for item in raw for p in (item.split(",") if name != "server_arg" else [item])
                if p.strip()]

    models = tuple(listed("model"))
    if not models and sources["model"] != "default":
        raise _fail(by_name["model"], sources["model"], values["model"], "names no model",
                    "Pass a matrix id, a family (dense, moe, vl), micro or all, or leave the setting out for the "
                    "micro checkpoints.")

    dtype = str(values["dtype"]).strip().lower()
    if dtype not in (*DTYPES, "both"):
        raise _fail(by_name["dtype"], sources["dtype"], values["dtype"], "is not a dtype mode",
                    "Use bfloat16 (the default), float16 or both.")
    dtypes = DTYPES if dtype == "both" else (dtype,)
    level = str(values["level"]).strip().lower()
    if level not in LEVELS:
        raise _fail(by_name["level"], sources["level"], values["level"], "is not a qualification level",
                    "Use full (the default: every suite and launch variant) or quick (for pull requests).")

    try:
        timeout = float(values["launch_timeout"])
        if not math.isfinite(timeout) or timeout <= 0:
            raise ValueError
    except ValueError:
        raise _fail(by_name["launch_timeout"], sources["launch_timeout"], values["launch_timeout"],
                    "is not a positive, finite number of seconds", "Use e.g. --lfm-launch-timeout 900.") from None

    def count(name: str, ok: Callable[[int], bool], why: str, fix: str) -> int:
        try:
            n = int(values[name])
            if not ok(n):
                raise ValueError
        except ValueError:
            raise _fail(by_name[name], sources[name], values[name], why, fix) from None
        return n

    concurrency = count("latency_concurrency", lambda n: n >= 1, "is not a positive integer",
                        "Use e.g. --lfm-latency-concurrency 8.")
    # ABBA pairs: an even number of rounds, so that a linear drift of the server cancels in the means
    fidelity_rounds = count("fidelity_rounds", lambda n: n >= 2 and n % 2 == 0, "is not an even number >= 2",
                            "Use e.g. --lfm-fidelity-rounds 8.")

    gpus: tuple[int, ...] | None = None
    if values["gpu"]:
        try:
            gpus = tuple(int(g) for g in listed("gpu"))
            if not gpus or any(g < 0 for g in gpus) or len(set(gpus)) != len(gpus):
                raise ValueError
        except ValueError:
            raise _fail(by_name["gpu"], sources["gpu"], values["gpu"], "is not a list of distinct GPU indices",
                        "Use e.g. --lfm-gpu 0,1 (indices as nvidia-smi lists them).") from None
        visible = [g.index for g in hosts.list_gpus()]
        if not visible:
            raise _fail(by_name["gpu"], sources["gpu"], values["gpu"],
                        "names GPUs, but no GPU is visible here (nvidia-smi is missing or lists none, or "
                        "CUDA_VISIBLE_DEVICES hides them)",
                        "On a host without a GPU leave the setting out: the runtime suites then skip, or run "
                        "against a server with --lfm-base-url URL or a recording with --lfm-replay DIR.")
        hidden = [g for g in gpus if g not in visible]
        if hidden:
            raise _fail(by_name["gpu"], sources["gpu"], values["gpu"],
                        "names " + ", ".join(f"GPU {g}" for g in hidden) + ", not visible here",
                        f"Use indices of the visible GPUs ({', '.join(map(str, visible))}, as nvidia-smi numbers "
                        "them), or leave the setting out to use all of them.")

    base_url = values["base_url"]
    if base_url is not None:
        base_url = str(base_url).rstrip("/")
        if base_url.endswith("/v1"):
            base_url = base_url[: -len("/v1")]
        if not base_url.startswith(("http://", "https://")):
            raise _fail(by_name["base_url"], sources["base_url"], values["base_url"], "is not an http(s) URL",
                        "Use the server's root URL, e.g. http://127.0.0.1:30000.")

    def path(name: str) -> Path | None:
        return Path(values[name]).expanduser() if values[name] else None

    report_dir = path("report")
    if report_dir is not None:
        # made now, so that a path that cannot hold the report stops the run before it starts, not after it ends
        try:
            report_dir.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=report_dir):
                pass
        except OSError as exc:
            raise _fail(by_name["report"], sources["report"], str(report_dir), f"cannot hold the report ({exc})",
                        "Pass a directory this user can create and write to, or leave the setting out (no "
                        "report).") from None
    record_dir, replay_dir = path("record"), path("replay")
    if record_dir and replay_dir:
        raise pytest.UsageError(
            f"pytest-lfm: lfm-record (from {sources['record']}) and lfm-replay (from {sources['replay']}) "
            "exclude each other. Record on a GPU host, replay anywhere: pass only one of them.")
    if replay_dir and not replay_dir.is_dir():
        raise _fail(by_name["replay"], sources["replay"], str(replay_dir), "is not a directory",
                    "Point it at a recording made with --lfm-record DIR.")
    replay_missing = str(values["replay_missing"]).strip().lower()
    if replay_missing not in ("fail", "skip"):
        raise _fail(by_name["replay_missing"], sources["replay_missing"], values["replay_missing"],
                    "is not fail or skip", "Use fail (the default) or skip.")
    matrix_paths = tuple(Path(p).expanduser() for p in listed("matrix"))
    for p in matrix_paths:
        if not p.is_file():
            raise _fail(by_name["matrix"], sources["matrix"], str(p), "is not a file",
                        "Pass the path of a TOML model matrix (see matrices/models.toml for the format).")

    return Settings(
        models=models or ("micro",),
        matrix_paths=matrix_paths,
        base_url=base_url,
        server_args=tuple(listed("server_arg")),
        dtypes=dtypes,
        launch_timeout=timeout,
        gpus=gpus,
        report_dir=report_dir,
        record_dir=record_dir,
        replay_dir=replay_dir,
        replay_missing=replay_missing,
        latency_concurrency=concurrency,
        fidelity_rounds=fidelity_rounds,
        level=level,
        sources=sources,
    )


def describe(settings: Settings) -> list[str]:
    """Lines for the report header: each setting, its value and where it came from."""
    shown: dict[str, object] = {
        "model": ",".join(settings.models),
        "matrix": ",".join(map(str, settings.matrix_paths)) or "built-in",
        "base_url": settings.base_url,
        "server_arg": shlex.join(settings.server_args) or None,
        "dtype": "both" if len(settings.dtypes) > 1 else settings.dtypes[0],
        "launch_timeout": f"{settings.launch_timeout:g}s",
        "gpu": ",".join(map(str, settings.gpus)) if settings.gpus is not None else "all visible",
        "report": settings.report_dir,
        "record": settings.record_dir,
        "replay": settings.replay_dir,
        "latency_concurrency": settings.latency_concurrency,
        "level": settings.level,
    }
    return [f"  {name}: {value} ({settings.sources.get(name, 'default')})" for name, value in shown.items()
            if value is not None]


def options_table() -> Sequence[tuple[str, str, str, str, str]]:
    """(CLI, ini, env, default, help) rows; the README's settings table is checked against this."""
    return [(o.flag, o.ini, o.env, o.default or "", o.help) for o in OPTIONS]

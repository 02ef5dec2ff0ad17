"""Every setting from every source, precedence, and errors that name the source."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from pytest_lfm.settings import OPTIONS

SHOW = """
def test_show(lfm_settings):
    print("SETTINGS", repr(lfm_settings))
    print("SOURCES", lfm_settings.sources)
"""


def run_show(pytester: pytest.Pytester, *args: str) -> str:
    pytester.makepyfile(SHOW)
    result = pytester.runpytest("-s", "-p", "no:cacheprovider", *args)
    result.assert_outcomes(passed=1)
    return result.stdout.str()


def test_defaults(pytester: pytest.Pytester) -> None:
    out = run_show(pytester)
    assert "models=('micro',)" in out
    assert "dtypes=('bfloat16',)" in out
    assert "launch_timeout=600.0" in out
    assert "'model': 'default'" in out


@pytest.mark.parametrize(
    ("option", "cli", "env", "ini", "expect"),
    [
        ("model", "micro-moe", "micro-vl", "micro-dense", "models=('{}',)"),
        ("dtype", "float16", "both", "float16", None),
        ("launch_timeout", "30", "40", "50", "launch_timeout={}.0"),
        ("gpu", "1", "2", "3", "gpus=({},)"),
        ("base_url", "http://a:1", "http://b:2", "http://c:3", "base_url='{}'"),
        ("server_arg", "--x", "--y", "--z", "server_args=('{}',)"),
        ("latency_concurrency", "2", "3", "4", "latency_concurrency={}"),
        ("fidelity_rounds", "6", "8", "10", "fidelity_rounds={}"),
        ("report", "r1", "r2", "r3", "report_dir=PosixPath('{}')"),
        ("record", "c1", "c2", "c3", "record_dir=PosixPath('{}')"),
    ],
)
def test_precedence_cli_env_ini(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, visible_gpus: Callable[[int], None], option: str,
    cli: str, env: str, ini: str, expect: str | None,
) -> None:
    visible_gpus(4)  # --lfm-gpu is checked against the visible GPUs
    opt = next(o for o in OPTIONS if o.name == option)
    extra = ["--lfm-model", "micro-dense"] if option == "base_url" else []
    pytester.makeini(f"[pytest]\n{opt.ini} = {ini}\n")
    monkeypatch.setenv(opt.env, env)
    runs = [(cli, f"command line {opt.flag}", [f"{opt.flag}={cli}"]), (env, f"environment {opt.env}", [])]
    for value, source, args in runs:
        out = run_show(pytester, *args, *extra)
        assert f"'{option}': '{source}'" in out, out
        if expect:
            assert expect.format(value) in out, out
    monkeypatch.delenv(opt.env)
    out = run_show(pytester, *extra)
    assert f"'{option}': 'tox.ini {opt.ini}'" in out, out
    if expect:
        assert expect.format(ini) in out, out


def test_an_ini_override_on_the_command_line_is_credited_to_it(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytester.makepyprojecttoml('[tool.pytest.ini_options]\nlfm_dtype = "bfloat16"\nlfm_latency_concurrency = "4"\n')
    monkeypatch.setenv("LFM_DTYPE", "both")
    out = run_show(pytester, "-o", "lfm_dtype=float16", "-o", "lfm_latency_concurrency=")
    assert "dtypes=('float16',)" in out and "'dtype': 'command line -o lfm_dtype'" in out, out
    # an empty -o value clears the ini file's value: the default applies
    assert "latency_concurrency=8" in out and "'latency_concurrency': 'default'" in out, out
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest("-o", "lfm_dtype=float16", "-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["*dtype: float16 (command line -o lfm_dtype)*"])


def test_report_header_lists_settings_and_sources(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LFM_DTYPE", "both")
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest("--lfm-launch-timeout", "42", "-p", "no:cacheprovider")
    result.stdout.fnmatch_lines([
        "pytest-lfm settings (value, source):",
        "*model: micro (default)*",
        "*dtype: both (environment LFM_DTYPE)*",
        "*launch_timeout: 42s (command line --lfm-launch-timeout)*",
        "pytest-lfm models: micro-dense, micro-thinking, micro-moe, micro-vl",
        "pytest-lfm runtime: sglang *; torch *; transformers *; GPUs: *",
    ])


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--lfm-dtype", "fp8"], {}, "*lfm-dtype = 'fp8' (from command line --lfm-dtype) is not a dtype mode*"),
        ([], {"LFM_LAUNCH_TIMEOUT": "soon"}, "*'soon' (from environment LFM_LAUNCH_TIMEOUT) is not a positive*"),
        (["--lfm-launch-timeout", "nan"], {},
         "*lfm-launch-timeout = 'nan' (from command line --lfm-launch-timeout) is not a positive, finite number*"),
        ([], {"LFM_LAUNCH_TIMEOUT": "inf"}, "*'inf' (from environment LFM_LAUNCH_TIMEOUT) is not a positive, finite*"),
        (["--lfm-launch-timeout=-5"], {}, "*'-5' (from command line --lfm-launch-timeout) is not a positive*"),
        ([], {"LFM_LAUNCH_TIMEOUT": "0"}, "*'0' (from environment LFM_LAUNCH_TIMEOUT) is not a positive*"),
        (["--lfm-gpu", "0,0"], {}, "*is not a list of distinct GPU indices*--lfm-gpu 0,1*"),
        (["--lfm-base-url", "localhost:3000"], {}, "*is not an http(s) URL*"),
        (["--lfm-replay", "nowhere"], {}, "*lfm-replay = 'nowhere'*is not a directory*--lfm-record*"),
        (["--lfm-matrix", "missing.toml"], {}, "*lfm-matrix = 'missing.toml'*is not a file*"),
        (["--lfm-latency-concurrency", "0"], {}, "*is not a positive integer*"),
        ([], {"LFM_FIDELITY_ROUNDS": "3"}, "*'3' (from environment LFM_FIDELITY_ROUNDS) is not an even number >= 2*"),
        (["--lfm-model", "LiquidAI/LFM2-1T"], {},
         "*unknown model 'LiquidAI/LFM2-1T' (from command line --lfm-model). Known ids: micro-dense*"
         "--lfm-matrix FILE*"),
        (["--lfm-base-url", "http://x:1"], {}, "*tests one running server*names 4 models*"),
        (["--lfm-model", ""], {}, "*lfm-model = ?''? (from command line --lfm-model) names no model. Pass a*"),
        ([], {"LFM_MODEL": " , "}, "*(from environment LFM_MODEL) names no model*"),
    ],
)
def test_bad_values_are_usage_errors_naming_the_source(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, args: list[str], env: dict[str, str], message: str,
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest(*args, "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


@pytest.mark.parametrize(
    ("count", "args", "env", "message"),
    [
        (2, ["--lfm-gpu", "99"], {}, "*lfm-gpu = ?'99'? (from command line --lfm-gpu) names GPU 99, not visible "
         "here. Use indices of the visible GPUs (0, 1, as nvidia-smi numbers them)*"),
        (2, [], {"LFM_GPU": "1,2,3"}, "*(from environment LFM_GPU) names GPU 2, GPU 3, not visible here*"),
        (0, ["--lfm-gpu", "0"], {}, "*lfm-gpu = ?'0'? (from command line --lfm-gpu) names GPUs, but no GPU is "
         "visible here*leave the setting out*"),
        (2, ["--lfm-gpu", ""], {}, "*lfm-gpu = ?''? (from command line --lfm-gpu) is not a list of distinct GPU*"),
    ],
    ids=["not-visible", "env-not-visible", "no-gpu", "empty"],
)
def test_gpus_are_checked_against_the_visible_ones_before_the_run(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, visible_gpus: Callable[[int], None], count: int,
    args: list[str], env: dict[str, str], message: str,
) -> None:
    # at configure time: on a host without a GPU, the run would otherwise first build a micro checkpoint (minutes)
    visible_gpus(count)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest(*args, "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_visible_gpus_are_accepted(pytester: pytest.Pytester, visible_gpus: Callable[[int], None]) -> None:
    visible_gpus(2)
    assert "gpus=(1, 0)" in run_show(pytester, "--lfm-gpu", "1,0")


def test_repeatable_options_accumulate(pytester: pytest.Pytester) -> None:
    # an argument that starts with "-" is given with "=" (argparse would read it as an option of its own)
    out = run_show(pytester, "--lfm-model", "micro-dense", "--lfm-model", "moe", "--lfm-server-arg=--a",
                   "--lfm-server-arg=--b=1")
    assert "models=('micro-dense', 'moe')" in out
    assert "server_args=('--a', '--b=1')" in out


def test_env_server_args_are_shell_split(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LFM_SERVER_ARG", "--mem-fraction-static 0.5 --log-level 'warning'")
    out = run_show(pytester)
    assert "server_args=('--mem-fraction-static', '0.5', '--log-level', 'warning')" in out


@pytest.mark.parametrize("source", ["environment", "ini"])
def test_badly_quoted_server_args_are_usage_errors_naming_the_variable(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, source: str,
) -> None:
    quoted = "--served-model-name 'my model"
    if source == "environment":
        monkeypatch.setenv("LFM_SERVER_ARG", quoted)
        message = (f"*lfm-server-arg = {quoted!r} (from environment LFM_SERVER_ARG) is not shell-quoted correctly "
                   "(No closing quotation). Quote it as a shell would*")
    else:
        pytester.makeini(f"[pytest]\nlfm_server_arg = {quoted}\n")
        message = "*lfm_server_arg (from tox.ini lfm_server_arg) is not shell-quoted correctly (No closing quotation)*"
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines([message])


def test_readme_documents_every_setting() -> None:
    from pathlib import Path

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    for opt in OPTIONS:
        assert f"`{opt.flag}" in readme and f"`{opt.ini}`" in readme and f"`{opt.env}`" in readme, opt.name

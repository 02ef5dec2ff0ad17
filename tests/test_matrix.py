"""The model matrix: contents, validation errors, selection, parametrization and capability skips."""

from __future__ import annotations

from pathlib import Path

import pytest

from pytest_lfm.matrix import LaunchConfig, MatrixError, Override, builtin_matrix_files, load_file, load_matrix
from pytest_lfm.runtime.compat import installed_sglang_version

REAL = {
    "LiquidAI/LFM2.5-230M": "dense", "LiquidAI/LFM2.5-350M": "dense", "LiquidAI/LFM2-350M": "dense",
    "LiquidAI/LFM2.5-1.2B-Instruct": "dense", "LiquidAI/LFM2.5-1.2B-Thinking": "dense",
    "LiquidAI/LFM2.5-2.6B": "dense", "LiquidAI/LFM2-2.6B": "dense",
    "LiquidAI/LFM2.5-8B-A1B": "moe", "LiquidAI/LFM2-8B-A1B": "moe",
    "LiquidAI/LFM2.5-24B-A2B": "moe", "LiquidAI/LFM2-24B-A2B": "moe",
    "LiquidAI/LFM2.5-VL-450M": "vl", "LiquidAI/LFM2-VL-450M": "vl", "LiquidAI/LFM2.5-VL-1.6B": "vl",
    "LiquidAI/LFM2.5-VL-3B": "vl", "LiquidAI/LFM2-VL-3B": "vl",
}
# Liquid's deprecations: each superseded model and the one in its place
SUCCESSORS = {
    "LiquidAI/LFM2-350M": "LiquidAI/LFM2.5-350M", "LiquidAI/LFM2-2.6B": "LiquidAI/LFM2.5-2.6B",
    "LiquidAI/LFM2-8B-A1B": "LiquidAI/LFM2.5-8B-A1B", "LiquidAI/LFM2-VL-450M": "LiquidAI/LFM2.5-VL-450M",
    "LiquidAI/LFM2-VL-3B": "LiquidAI/LFM2.5-VL-3B",
}
# sglang's LFM2.5 cookbook launches (docs_new/src/snippets/configs/LiquidAI/lfm2.5.jsx), and LFM2.5-2.6B's
REASONING = {"LiquidAI/LFM2.5-1.2B-Thinking": "qwen3-thinking", "LiquidAI/LFM2.5-8B-A1B": "qwen3",
             "LiquidAI/LFM2.5-2.6B": "qwen3-thinking"}


def test_builtin_matrix_lists_every_supported_model_and_the_micro_checkpoints() -> None:
    matrix = load_matrix()
    assert {m.id: m.family for m in matrix.models if not m.micro} == REAL
    assert [m.id for m in matrix.models if m.micro] == ["micro-dense", "micro-thinking", "micro-moe", "micro-vl"]
    for model in matrix.models:
        if "tools" in model.capabilities:
            assert model.launch_args[:2] == ("--tool-call-parser", "lfm2"), model.id
        assert ("vision" in model.capabilities) == (model.family == "vl"), model.id
        assert model.sampling, model.id  # every model carries its recommended sampling
    assert {m.id: m.successor for m in matrix.models if m.legacy} == SUCCESSORS
    assert not any(matrix.get(new).legacy for new in SUCCESSORS.values())  # type: ignore[union-attr]
    assert {m.id: m.reasoning_parser for m in matrix.models if "reasoning" in m.capabilities} == {
        **REASONING, "micro-thinking": "qwen3-thinking"}
    budget = matrix.get("LiquidAI/LFM2.5-1.2B-Instruct").budget_for("NVIDIA B300 SXM6", "low-latency")  # type: ignore[union-attr]
    assert budget is not None and budget["ttft_ms"] == 8.79 and budget["tpot_ms"] == 0.86


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[[model]]\nid = "x"\nfamily = "huge"\ncapabilities = []\nchat_template = "lfm2"\n',
         "model 'x', field family: 'huge' is not one of ['dense', 'moe', 'vl']"),
        ('[[model]]\nid = "x"\nfamily = "dense"\ncapabilities = ["telepathy"]\nchat_template = "lfm2"\n',
         "model 'x', field capabilities.0: 'telepathy' is not one of"),
        ('[[model]]\nid = "x"\nfamily = "dense"\ncapabilities = []\n',
         "model 'x', field (entry): 'chat_template' is a required"),
        ('[[model]]\nid = "x"\nfamily = "dense"\ncapabilities = []\nchat_template = "lfm2"\n'
         '[model.latency_budgets."NVIDIA H100"]\nttft_ms = -1\n',
         "model 'x', field latency_budgets.NVIDIA H100.ttft_ms: -1 is less than or equal to the minimum of 0"),
        ('[[model]]\nid = "x"\nfamily = "dense"\ncapabilities = []\nchat_template = "lfm2"\n'
         '[[model.latency_budgets."NVIDIA H100"]]\nttft_ms = 9\n[[model.latency_budgets."NVIDIA H100"]]\n'
         'concurrency = 0\nttft_ms = 9\n',
         "model 'x', field latency_budgets.NVIDIA H100.1.concurrency: 0 is less than the minimum of 1"),
        ('[[model]]\nid = "x"\nfamily = "dense"\ncapabilities = []\nchat_template = "lfm2"\n'
         '[[model.latency_budgets."NVIDIA H100"]]\nttft_ms = 9\n[[model.latency_budgets."NVIDIA H100"]]\n'
         'concurrency = 1\nttft_ms = 8\n',
         "model 'x', field latency_budgets.NVIDIA H100: two budgets for profile 'default' at concurrency 1"),
        ('[[model]]\nid = "x"\nfamily = "dense"\ncapabilities = []\nchat_template = "lfm2"\nlaunch_arg = []\n',
         "model 'x', field (entry): Additional properties are not allowed ('launch_arg' was unexpected)"),
        ('[[model]]\nid = "x"\nfamily = "dense"\ncapabilities = ["chat", "reasoning"]\nchat_template = "lfm2.5"\n'
         'launch_args = ["--tool-call-parser", "lfm2"]\n',
         "model 'x', field launch_args: capability 'reasoning' needs --reasoning-parser NAME there"),
        ('[[model]]\nid = "x"\nfamily = "dense"\ncapabilities = []\nchat_template = "lfm2"\nsuccessor = "x"\n',
         "model 'x', field successor: names the model itself"),
        ('[[model]]\nid = "x"\nfamily = "dense"\ncapabilities = []\nchat_template = "lfm2"\n'
         'sampling = { temperature = 0.1, top_n = 5 }\n',
         "model 'x', field sampling: Additional properties are not allowed ('top_n' was unexpected)"),
        ('[[model]]\nid = "x"\nfamily = "dense"\ncapabilities = []\nchat_template = "lfm2"\n'
         'sampling = { top_p = 0 }\n',
         "model 'x', field sampling.top_p: 0 is less than or equal to the minimum of 0"),
        ('[[model]]\nid = "x"\nfamily = "dense"\ncapabilities = []\nchat_template = "lfm2"\n'
         'sampling = { top_k = 0.5 }\n',
         "model 'x', field sampling.top_k: 0.5 is not of type 'integer'"),
        ("model = 3\n", "3 is not of type 'array'"),
        ("[[model]\n", "not a readable TOML file"),
    ],
)
def test_malformed_matrix_names_file_entry_and_field(tmp_path: Path, toml: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    with pytest.raises(MatrixError) as info:
        load_file(path)
    assert str(info.value).startswith(str(path)) and message in str(info.value)


LFM25_SAMPLING = {"temperature": 0.1, "top_k": 50, "top_p": 0.1, "repetition_penalty": 1.05}


def test_sampling_is_the_recommended_parameters_and_empty_when_absent(tmp_path: Path) -> None:
    matrix = load_matrix()
    assert matrix.get("LiquidAI/LFM2.5-1.2B-Instruct").sampling == LFM25_SAMPLING  # type: ignore[union-attr]
    assert all(m.sampling == LFM25_SAMPLING for m in matrix.models if m.micro)
    path = tmp_path / "plain.toml"
    path.write_text('[[model]]\nid = "x"\nfamily = "dense"\ncapabilities = []\nchat_template = "lfm2"\n'
                    'sampling = { min_p = 0.15, temperature = 0.3 }\n'
                    '[[model]]\nid = "y"\nfamily = "dense"\ncapabilities = []\nchat_template = "lfm2"\n')
    assert [dict(m.sampling) for m in load_file(path)] == [{"min_p": 0.15, "temperature": 0.3}, {}]


def test_a_matrix_that_is_not_utf8_names_the_file(pytester: pytest.Pytester) -> None:
    # a Latin-1 "é" in a comment, which UTF-8 decoding rejects
    path = pytester.path / "latin1.toml"
    path.write_bytes('# café\n[[model]]\nid = "x"\n'.encode("latin-1"))
    with pytest.raises(MatrixError, match=r"not UTF-8 text .* at byte 5.*save it in that encoding") as info:
        load_file(path)
    assert str(info.value).startswith(str(path))
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest("--lfm-matrix", "latin1.toml", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*pytest-lfm: *latin1.toml: not UTF-8 text (invalid continuation byte at byte 5)*"])


def test_malformed_matrix_is_a_usage_error(pytester: pytest.Pytester) -> None:
    pytester.makefile(
        ".toml", bad='[[model]]\nid = "mine"\nfamily = "dense"\ncapabilities = "tools"\nchat_template = "lfm2"\n'
    )
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest("--lfm-matrix", "bad.toml", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*bad.toml: model 'mine', field capabilities: 'tools' is not of type 'array'*"])


def test_selectors() -> None:
    matrix = load_matrix()
    ids = lambda sel: [m.id for m in matrix.select(sel)]  # noqa: E731
    assert ids(["micro"]) == ["micro-dense", "micro-thinking", "micro-moe", "micro-vl"]
    assert ids(["moe"]) == ["LiquidAI/LFM2.5-8B-A1B", "LiquidAI/LFM2.5-24B-A2B", "LiquidAI/LFM2-24B-A2B"]
    assert ids(["dense", "LiquidAI/LFM2-350M"]) == [
        "LiquidAI/LFM2.5-230M", "LiquidAI/LFM2.5-350M", "LiquidAI/LFM2.5-1.2B-Instruct",
        "LiquidAI/LFM2.5-1.2B-Thinking", "LiquidAI/LFM2.5-2.6B", "LiquidAI/LFM2-350M"]
    assert ids(["vl", "dense"])[:1] == ["LiquidAI/LFM2.5-VL-450M"]
    assert ids(["legacy"]) == list(SUCCESSORS)
    assert len(ids(["all"])) == len(REAL) + 4  # every model: current, legacy and micro
    assert ids(["LFM2-VL-3B", "micro-moe"]) == ["LiquidAI/LFM2-VL-3B", "micro-moe"]
    assert ids(["LFM2-8B-A1B", "LFM2.5-8B-A1B"]) == ["LiquidAI/LFM2-8B-A1B", "LiquidAI/LFM2.5-8B-A1B"]
    with pytest.raises(KeyError):
        matrix.select(["LFM3"])


def test_launch_config_arguments_and_ids() -> None:
    model = load_matrix().get("micro-moe")
    assert model is not None
    default = LaunchConfig(model)
    assert default.id == "micro-moe" and default.tp_size == 1
    fp16 = LaunchConfig(model, "float16", "low-latency", ("--tp-size", "2"), (("SGLANG_MAMBA_CONV_DTYPE", "float16"),))
    assert fp16.id == "micro-moe-float16-low-latency---tp-size 2-SGLANG_MAMBA_CONV_DTYPE=float16"
    assert fp16.server_args() == [*model.launch_args, "--enable-torch-compile", "--chunked-prefill-size", "-1",
                                  "--tp-size", "2", "--dtype", "float16", "--enable-metrics"]
    # every server launch exposes /metrics, once, wherever the flag already is; an Engine gets none
    assert default.server_args() == [*model.launch_args, "--enable-metrics"]
    assert LaunchConfig(model, extra_args=("--enable-metrics",)).server_args().count("--enable-metrics") == 1
    assert "enable_metrics" not in fp16.engine_kwargs()
    assert fp16.tp_size == 2
    assert fp16.engine_kwargs()["tp_size"] == 2 and fp16.engine_kwargs()["enable_torch_compile"] is True
    assert fp16.engine_kwargs()["chunked_prefill_size"] == -1 and fp16.engine_kwargs()["tool_call_parser"] == "lfm2"
    # float16 brings the conv-state dtype it needs (not part of the id); an explicit env overrides it
    assert LaunchConfig(model, "float16").id == "micro-moe-float16"
    assert LaunchConfig(model, "float16").environment() == {"SGLANG_MAMBA_CONV_DTYPE": "float16"}
    assert default.environment() == {}
    override = LaunchConfig(model, "float16", env=(("SGLANG_MAMBA_CONV_DTYPE", "bfloat16"),))
    assert override.environment() == {"SGLANG_MAMBA_CONV_DTYPE": "bfloat16"}
    assert override.id == "micro-moe-float16-SGLANG_MAMBA_CONV_DTYPE=bfloat16"


PARAMS = """
import pytest

def test_any(lfm_model):
    pass

@pytest.mark.lfm_requires("vision")
def test_vision(lfm_model):
    pass

@pytest.mark.lfm_requires("tools")
def test_tools(lfm_model, lfm_dtype):
    pass

def test_plain():
    pass
"""


def test_tests_are_parametrized_by_model_id_and_capabilities_skip(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(PARAMS)
    result = pytester.runpytest("-v", "-rs", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=8, skipped=5)
    result.stdout.fnmatch_lines_random([
        "*test_any?micro-dense? PASSED*", "*test_any?micro-vl? PASSED*", "*test_any?micro-thinking? PASSED*",
        "SKIPPED * micro-thinking lacks capability tools",
        "*test_vision?micro-vl? PASSED*", "*test_vision?micro-dense? SKIPPED*",
        "*test_tools?micro-moe? PASSED*",
        "SKIPPED * micro-dense lacks capability vision",
        "SKIPPED * micro-vl lacks capability tools",
    ])


def test_dtype_both_parametrizes_each_model_twice(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(PARAMS)
    result = pytester.runpytest("-v", "--lfm-dtype", "both", "--lfm-model", "LiquidAI/LFM2-350M",
                                "-p", "no:cacheprovider", "-k", "tools")
    result.stdout.fnmatch_lines(["*test_tools?LiquidAI/LFM2-350M? PASSED*",
                                 "*test_tools?LiquidAI/LFM2-350M-float16? PASSED*"])


def test_bad_marker_stops_the_run_at_collection(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("""
import pytest
@pytest.mark.lfm_requires("smell")
def test_x(lfm_model): pass
""")
    result = pytester.runpytest("-p", "no:cacheprovider")
    # raised while parametrizing, the UsageError is reported as a collection error: nothing runs
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*UsageError*::test_x: bad @pytest.mark.lfm_requires: lfm_requires takes "
                                 "capabilities from ('chat', 'tools', 'vision', 'reasoning'), got ('smell',)*",
                                 "*Interrupted: 1 error during collection*"])


def test_tests_group_by_configuration_and_model_per_worker(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_a=PARAMS, test_b=PARAMS.replace("def test_", "def test_b_"))
    result = pytester.runpytest("--collect-only", "-q", "--lfm-dtype", "both", "-p", "no:cacheprovider")
    names = [line for line in result.outlines if "::" in line]
    configs = [n.split("[", 1)[1] for n in names if "[" in n]
    # each configuration forms one contiguous block: it launches once
    blocks = [c for i, c in enumerate(configs) if i == 0 or configs[i - 1] != c]
    assert len(blocks) == len(set(blocks)) == 8, configs


def test_per_model_engine_block_then_server_block_pool_drivers_last_and_timing_checks_after_all(
    pytester: pytest.Pytester,
) -> None:
    # a test that stops the pool itself (the engine shutdown check) sorted among server tests would force the
    # server to launch twice: seen on the H100 (test_engine between test_chat and test_streaming). The order is
    # selection.order_key's: timing/memory checks (lfm_quiet) last; per model its engine block (whose start overlaps
    # the server's) before its server block; within a block the pool drivers last, and engine tests that need the
    # server after those that do not
    pytester.makepyfile(test_a="""
def test_pool(lfm_runtime_pool, lfm_launch): pass
def test_engine_pool(lfm_runtime_pool, lfm_engine): pass
def test_engine_vs_server(lfm_engine, lfm_server): pass
def test_engine(lfm_engine): pass
def test_load(lfm_server, lfm_quiet): pass
def test_server(lfm_server): pass
""", test_b="def test_server_b(lfm_server): pass\n")
    result = pytester.runpytest("--collect-only", "-q", "--lfm-model", "micro-dense", "--lfm-model", "micro-moe",
                                "-p", "no:cacheprovider")
    order = [(line.split("::")[1].split("[")[0], line.rstrip("]").split("[")[1])
             for line in result.outlines if "::" in line]
    per_model = ["test_engine", "test_engine_vs_server", "test_engine_pool", "test_server", "test_server_b",
                 "test_pool"]
    assert order == [*((name, "micro-dense") for name in per_model), *((name, "micro-moe") for name in per_model),
                     ("test_load", "micro-dense"), ("test_load", "micro-moe")], order


def test_every_models_own_launch_runs_before_the_marker_variants(pytester: pytest.Pytester) -> None:
    # on the H200 (pytest 9.1.1) a time-limited run spent its minutes on micro-dense's float16 and low-latency
    # launches before micro-moe and micro-vl had started; the conftest hands the plugin the worst order
    pytester.makeconftest("""
import pytest
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    items.reverse()
""")
    pytester.makepyfile(test_a="""
import pytest
def test_chat(lfm_server): pass
@pytest.mark.lfm_launch(dtype="float16")
def test_fp16(lfm_server): pass
""", test_b="""
import pytest
@pytest.mark.lfm_launch(profile="low-latency")
def test_fast(lfm_server): pass
def test_tools(lfm_server): pass
""")
    for extra in ((), ("--lfm-server-arg=--enable-metrics",)):
        result = pytester.runpytest("--collect-only", "-q", "--lfm-model", "micro-dense", "--lfm-model", "micro-moe",
                                    "-p", "no:cacheprovider", *extra)
        configs = [line.rstrip("]").split("[")[1] for line in result.outlines if "::" in line]
        blocks = [c for i, c in enumerate(configs) if i == 0 or configs[i - 1] != c]
        assert len(configs) == 8 and len(blocks) == len(set(blocks)) == 6, configs
        assert [b.split("---")[0] for b in blocks[:2]] == ["micro-dense", "micro-moe"], blocks
        assert all("float16" in b or "low-latency" in b for b in blocks[2:]), blocks


def test_stacked_launch_markers_run_a_test_on_each_variant_and_quick_keeps_the_own_one(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(test_a="""
import pytest
@pytest.mark.lfm_launch()
@pytest.mark.lfm_launch(dtype="float16", extra_args=("--stream-interval", "8"), env={"X": "1"})
def test_both(lfm_server): pass
@pytest.mark.lfm_launch(dtype="bfloat16")
def test_bf16_variant(lfm_server): pass
""")
    def collected(*extra: str) -> list[str]:
        result = pytester.runpytest("--collect-only", "-q", "--lfm-model", "micro-dense", "-p", "no:cacheprovider",
                                    *extra)
        return sorted(line for line in result.outlines if "::" in line)

    variant = "micro-dense-float16---stream-interval 8-X=1"
    assert collected() == sorted(["test_a.py::test_bf16_variant[micro-dense]", "test_a.py::test_both[micro-dense]",
                                  f"test_a.py::test_both[{variant}]"])
    # --lfm-dtype float16: the unmarked variant and the float16 one are two configurations, bfloat16's stays one
    assert f"test_a.py::test_both[{variant}]" in collected("--lfm-dtype", "float16")
    # the quick level: a marker with arguments asks for a variant, which it leaves out
    assert collected("--lfm-level", "quick") == ["test_a.py::test_both[micro-dense]"]


TWINS = """
[[model]]
id = "org-a/LFM2-350M-ft"
family = "dense"
capabilities = ["chat"]
chat_template = "lfm2"

[[model]]
id = "org-b/LFM2-350M-ft"
family = "dense"
capabilities = ["chat"]
chat_template = "lfm2"
"""


def test_a_short_name_of_two_models_is_ambiguous_not_unknown(pytester: pytest.Pytester) -> None:
    path = pytester.makefile(".toml", twins=TWINS)
    matrix = load_matrix([path])
    with pytest.raises(KeyError):
        matrix.select(["LFM2-350M-ft"])
    assert [m.id for m in matrix.select(["org-b/LFM2-350M-ft"])] == ["org-b/LFM2-350M-ft"]
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest("--lfm-matrix", "twins.toml", "--lfm-model", "LFM2-350M-ft", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*pytest-lfm: model 'LFM2-350M-ft' (from command line --lfm-model) is ambiguous: "
                                 "it is the short name of org-a/LFM2-350M-ft, org-b/LFM2-350M-ft. Pass the full id*"])


REDEFINED = """
[[model]]
id = "micro-dense"
family = "dense"
micro = "dense"
capabilities = ["chat"]
chat_template = "lfm2"

[[model]]
id = "mine"
family = "dense"
capabilities = ["chat"]
chat_template = "lfm2"

[[model]]
id = "mine"
family = "dense"
capabilities = ["chat", "tools"]
chat_template = "lfm2"
"""


def test_a_repeated_id_overrides_the_earlier_entry_and_says_so(pytester: pytest.Pytester) -> None:
    path = pytester.makefile(".toml", redefined=REDEFINED)
    matrix = load_matrix([path])
    builtin = next(p for p in builtin_matrix_files() if p.name == "micro.toml")
    assert matrix.overrides == (Override("micro-dense", str(builtin), str(path)),
                                Override("mine", str(path), str(path)))
    assert matrix.get("micro-dense").capabilities == {"chat"}  # type: ignore[union-attr]
    assert matrix.get("mine").capabilities == {"chat", "tools"}  # type: ignore[union-attr]
    # the new entry takes the old one's place
    assert matrix.ids()[:4] == ["micro-dense", "micro-thinking", "micro-moe", "micro-vl"]
    assert load_matrix().overrides == ()
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest("--lfm-matrix", "redefined.toml", "-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["pytest-lfm models: micro-dense, micro-thinking, micro-moe, micro-vl",
                                 f"pytest-lfm matrix: micro-dense from redefined.toml replaces the one from {builtin}",
                                 "pytest-lfm matrix: mine from redefined.toml replaces the one from redefined.toml"])


NEWER_SGLANG = """
[[model]]
id = "org/needs-newer-sglang"
family = "dense"
capabilities = ["chat"]
chat_template = "lfm2"
min_sglang = "99.0"
"""


def test_a_model_needing_a_newer_sglang_skips_naming_both_versions(pytester: pytest.Pytester) -> None:
    pytester.makefile(".toml", newer=NEWER_SGLANG)
    pytester.makepyfile("def test_any(lfm_model):\n    pass\n")
    installed = installed_sglang_version()
    assert installed is not None  # sglang is a dependency
    result = pytester.runpytest("--lfm-matrix", "newer.toml", "--lfm-model", "org/needs-newer-sglang", "-rs",
                                "-p", "no:cacheprovider")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines([f"SKIPPED * sglang {installed} is installed; org/needs-newer-sglang needs "
                                 "sglang >= 99.0 (min_sglang in *newer.toml)"])


LINEUP = """
[[model]]
id = "org/OLD-1B"
family = "dense"
capabilities = ["chat"]
chat_template = "lfm2"
successor = "org/NEW-1B"

[[model]]
id = "org/NEW-1B"
family = "dense"
capabilities = ["chat", "reasoning"]
chat_template = "lfm2.5"
launch_args = ["--reasoning-parser", "qwen3"]
"""


def test_a_superseded_model_is_selected_by_legacy_and_all_not_by_its_family(pytester: pytest.Pytester) -> None:
    matrix = load_matrix([pytester.makefile(".toml", lineup=LINEUP)])
    ids = lambda sel: [m.id for m in matrix.select(sel)]  # noqa: E731
    old, new = matrix.get("org/OLD-1B"), matrix.get("org/NEW-1B")
    assert old is not None and new is not None
    assert (old.legacy, old.successor, new.legacy, new.successor) == (True, "org/NEW-1B", False, None)
    assert "org/OLD-1B" not in ids(["dense"]) and "org/NEW-1B" in ids(["dense"])
    assert "org/OLD-1B" in ids(["legacy"]) and "org/NEW-1B" not in ids(["legacy"])
    assert {"org/OLD-1B", "org/NEW-1B", "micro-dense"} <= set(ids(["all"]))
    assert ids(["OLD-1B"]) == ["org/OLD-1B"]  # by its short name, as any model
    assert (new.reasoning_parser, old.reasoning_parser) == ("qwen3", None)
    pytester.makepyfile("def test_x(lfm_model): pass")
    result = pytester.runpytest("--lfm-matrix", "lineup.toml", "--lfm-model", "OLD-1B", "-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["pytest-lfm models: org/OLD-1B",
                                 "pytest-lfm matrix: org/OLD-1B is legacy, superseded by org/NEW-1B"])


def test_a_successor_the_matrix_lacks_is_a_usage_error_naming_the_entry(pytester: pytest.Pytester) -> None:
    pytester.makefile(".toml", lineup=LINEUP.replace('successor = "org/NEW-1B"', 'successor = "NEW-1B"'))
    pytester.makepyfile("def test_x(): pass")
    result = pytester.runpytest("--lfm-matrix", "lineup.toml", "-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*lineup.toml: model 'org/OLD-1B', field successor: 'NEW-1B' is not a model of the "
                                 "matrix (give its full id*"])

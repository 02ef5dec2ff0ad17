"""Micro checkpoints: script, templates, tool rendering, cache keys, and greedy bf16 reproduction of the script."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pytest_lfm import micro
from pytest_lfm.micro import configs, corpus, render
from pytest_lfm.micro.script import load_script
from pytest_lfm.runtime import compat

SCRIPT = load_script()

GOLDEN_LFM2_CALL_0517 = (
    '<|startoftext|><|im_start|>system\nList of tools: <|tool_list_start|>[{"type": "function", "function": '
    '{"description": "Get the current weather in a city", "name": "get_weather", "parameters": {"type": "object", '
    '"properties": {"location": {"type": "string", "description": "City name"}}, "required": ["location"]}, '
    '"strict": false}, "defer_loading": null}]<|tool_list_end|><|im_end|>\n'
    "<|im_start|>user\nWhat is the weather in Berlin?<|im_end|>\n<|im_start|>assistant\n"
)
GOLDEN_LFM25_RESULT_0523 = (
    '<|startoftext|><|im_start|>system\nList of tools: [{"type": "function", "function": {"name": "get_weather", '
    '"description": "Get the current weather in a city", "parameters": {"type": "object", "properties": {"location": '
    '{"type": "string", "description": "City name"}}, "required": ["location"]}}, "defer_loading": null}, '
    '{"type": "function", "function": {"name": "get_time", "description": "Get the local time in a city", '
    '"parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "City name"}}, '
    '"required": ["city"]}}, "defer_loading": null}]<|im_end|>\n'
    "<|im_start|>user\nWhat is the weather in Paris?<|im_end|>\n"
    '<|im_start|>assistant\n<|tool_call_start|>[get_weather(location="Paris")]<|tool_call_end|><|im_end|>\n'
    '<|im_start|>tool\n{"temperature": 18, "condition": "sunny"}<|im_end|>\n<|im_start|>assistant\n'
)


def test_lfm2_template_puts_tools_between_list_tokens_in_sglang_0517_form() -> None:
    assert render.render_prompt(SCRIPT.get("call-weather-one-tool"), None, "lfm2", "0.5.17") == GOLDEN_LFM2_CALL_0517


def test_lfm25_template_lists_tools_plainly_and_passes_tool_results_raw() -> None:
    got = render.render_prompt(SCRIPT.get("result-weather-paris"), None, "lfm2.5", "0.5.23")
    assert got == GOLDEN_LFM25_RESULT_0523


def test_lfm2_template_wraps_tool_results_and_keeps_system_prompt_first() -> None:
    got = render.render_prompt(SCRIPT.get("json-weather-berlin"), None, "lfm2", "0.5.23")
    assert got.startswith("<|startoftext|><|im_start|>system\nOutput function calls as JSON.\nList of tools: "
                          "<|tool_list_start|>[")
    got = render.render_prompt(SCRIPT.get("result-weather-paris"), None, "lfm2", "0.5.23")
    assert '<|im_start|>tool\n<|tool_response_start|>{"temperature": 18, "condition": "sunny"}' in got


def test_lfm25_template_drops_the_reasoning_of_an_assistant_turn_before_the_last() -> None:
    past = [{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "<think>R1</think>A1"},
            {"role": "user", "content": "Q2"}, {"role": "assistant", "content": "<think>R2</think>A2"},
            {"role": "user", "content": "Q3"}]
    got = render.render_prompt(past, None, "lfm2.5", "0.5.23")
    assert "<|im_start|>assistant\nA1<|im_end|>" in got and "R1" not in got
    assert "<|im_start|>assistant\n<think>R2</think>A2<|im_end|>" in got  # the last assistant turn keeps it


def test_reasoning_completions_open_with_the_think_block() -> None:
    assert render.completion_text(SCRIPT.get("reasoning-math")) == (
        "<think>Adding two and two gives four</think>2 + 2 = 4.")
    assert render.completion_text(SCRIPT.get("reasoning-call-weather-paris")).endswith(
        '</think><|tool_call_start|>[get_weather(location="Paris")]<|tool_call_end|>')


def test_image_parts_render_as_image_token() -> None:
    got = render.render_prompt(SCRIPT.get("image-count"), None, "lfm2", "0.5.17")
    assert got == ("<|startoftext|><|im_start|>user\n<image>How many shapes are there?<|im_end|>\n"
                   "<|im_start|>assistant\n")


def test_tool_choice_named_renders_only_that_tool_and_none_renders_no_tools() -> None:
    named = render.render_prompt(SCRIPT.get("forced-named-time"), None, "lfm2", "0.5.17")
    assert '"name": "get_time"' in named and "get_weather" not in named
    assert "List of tools" not in render.render_prompt(SCRIPT.get("no-tool-choice-none"), None, "lfm2", "0.5.17")


def test_render_tools_0523_matches_installed_sglang() -> None:
    protocol = pytest.importorskip("sglang.srt.entrypoints.openai.protocol")
    import sglang

    if not compat.at_least(sglang.__version__, "0.5.23"):
        pytest.skip(f"installed sglang {sglang.__version__} predates the 0.5.23 form")
    for tool in SCRIPT.tools.values():
        dumped = protocol.Tool(**tool).model_dump()
        assert json.dumps(render.render_tools([tool], sglang.__version__)[0]) == json.dumps(dumped)


def test_completions_follow_the_lfm2_call_formats() -> None:
    assert render.completion_text(SCRIPT.get("parallel-weather-time")) == (
        '<|tool_call_start|>[get_weather(location="Rome"), get_time(city="Madrid")]<|tool_call_end|>'
    )
    assert render.completion_text(SCRIPT.get("json-time-seoul")) == (
        '<|tool_call_start|>[{"name": "get_time", "arguments": {"city": "Seoul"}}]<|tool_call_end|>'
    )
    assert render.completion_text(SCRIPT.get("text-around-calls-rome-madrid")) == (
        'First Rome.<|tool_call_start|>[get_weather(location="Rome")]<|tool_call_end|>Then Madrid.'
        '<|tool_call_start|>[get_weather(location="Madrid")]<|tool_call_end|>Both are on their way.'
    )
    assert render.completion_text(SCRIPT.get("forced-required-weather")) == (
        '[{"name": "get_weather", "parameters": {"location": "Oslo"}}]'
    )


def test_each_several_call_prompt_has_forced_turns_for_both_choices() -> None:
    """The forced-call checks send the parallel turns' prompts with tool_choice required and named: the script trains
    each (a required turn shares the parallel turn's prompt; training bans <|tool_call_start|> at its first token, as
    sglang's JSON grammar does, so the parallel turn keeps its pythonic answer)."""
    forced = [t for t in SCRIPT.turns if t.kind == "forced"]
    for several in (t for t in SCRIPT.turns if t.kind == "parallel"):
        named = {"type": "function", "function": {"name": several.tool_calls[0]["name"]}}
        for choice in ("required", named):
            match = [t for t in forced if t.messages == several.messages and t.tool_choice == choice]
            assert len(match) == 1 and match[0].checkpoints == several.checkpoints, (several.id, choice)
            same_prompt = render.render_prompt(match[0]) == render.render_prompt(several)
            assert same_prompt == (choice == "required"), (several.id, choice)


def test_script_covers_every_kind_and_a_tiled_image() -> None:
    kinds = {t.kind for t in SCRIPT.turns}
    assert kinds == {"answer", "call", "parallel", "json_call", "forced", "after_result", "no_tool", "call_text",
                     "image", "reasoning", "reasoning_call"}
    assert any(max(img.width, img.height) > 512 for t in SCRIPT.turns for img in t.images)


def test_copy_variants_invent_new_argument_values() -> None:
    exs = [e for e in corpus.examples(SCRIPT, "dense") if not e.scripted]
    tool_turns = {t.id for t in SCRIPT.for_checkpoint("dense") if t.tool_calls or t.kind == "after_result"}
    assert {e.turn_id.rstrip("~") for e in exs} == tool_turns  # every tool turn, copy_variants (1) times
    assert len(exs) == len(tool_turns) * configs.TRAINING["copy_variants"]
    assert all("Paris" not in e.completion for e in exs if e.turn_id.startswith("call-weather-paris"))


def test_changed_recipe_gets_a_new_cache_key(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    before = micro.checkpoint_dir("dense", tmp_path)
    monkeypatch.setitem(configs.TRAINING, "seed", configs.TRAINING["seed"] + 1)
    assert micro.checkpoint_dir("dense", tmp_path) != before
    monkeypatch.undo()
    assert micro.checkpoint_dir("dense", tmp_path) == before
    monkeypatch.setitem(configs.CONFIGS["moe"], "num_experts", 4)
    assert micro.checkpoint_dir("dense", tmp_path) == before


def _keys(root: Path) -> list[str]:
    """The checkpoint folder names (name-key) that the package copied under ``root`` computes."""
    # without pip -e's finder, which would import the checkout instead of the copy
    code = ("import sys; sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f)]; "
            "sys.path.insert(0, sys.argv[1]); from pytest_lfm import micro; "
            "assert micro.__file__.startswith(sys.argv[1]), micro.__file__; "
            "print(*(micro.checkpoint_dir(n).name for n in micro.NAMES))")
    out = subprocess.run([sys.executable, "-c", code, str(root)], capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_a_refactor_outside_the_training_code_keeps_every_key(tmp_path: Path) -> None:
    """Edits to the script's code, the rendering, the training set's code and the cache code that leave the rendered
    training set as it is keep the keys (and so the recordings); an edit to the training loop changes all three."""
    package = Path(micro.__file__).parents[1]
    shutil.copytree(package, tmp_path / "pytest_lfm", ignore=shutil.ignore_patterns("__pycache__"))
    here = tmp_path / "pytest_lfm" / "micro"
    before = _keys(tmp_path)
    for name in ("__init__.py", "script.py", "render.py", "corpus.py", "configs.py", "verify.py"):
        with (here / name).open("a") as f:
            f.write("\n\ndef _an_added_helper() -> None:\n    \"\"\"Nothing the training set sees.\"\"\"\n")
    assert _keys(tmp_path) == before
    with (here / "train.py").open("a") as f:
        f.write("\n# a changed training loop\n")
    after = _keys(tmp_path)
    assert [k.split("-")[0] for k in after] == [k.split("-")[0] for k in before]
    assert not set(after) & set(before)


def test_second_build_is_served_from_the_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(configs.TRAINING, "max_steps", 1)
    monkeypatch.setitem(configs.TRAINING, "copy_variants", 0)
    first = micro.build("dense", cache_dir=tmp_path, device="cpu")
    assert micro.info(first)["steps"] == 1
    assert (first / "model.safetensors").stat().st_size <= 15 * 2**20

    def no_rebuild(*args: object, **kwargs: object) -> None:
        raise AssertionError("rebuilt a cached checkpoint")

    monkeypatch.setattr("pytest_lfm.micro.builder.build_into", no_rebuild)
    assert micro.build("dense", cache_dir=tmp_path, device="cpu") == first


def built_checkpoint(name: str) -> Path:
    """The cached checkpoint ``name``; skips when it is not built yet unless LFM_BUILD_MICRO=1 (a CPU build takes
    tens of minutes per checkpoint: build them once with ``pytest-lfm micro build``)."""
    path = micro.checkpoint_dir(name)
    if not micro.is_built(path) and os.environ.get("LFM_BUILD_MICRO") != "1":
        pytest.skip(f"micro checkpoint {name!r} is not in the build cache ({path}); build it with "
                    f"`pytest-lfm micro build {name}` or set LFM_BUILD_MICRO=1 to build it in this test")
    return micro.build(name)


@pytest.mark.parametrize("name", micro.NAMES)
def test_greedy_bf16_decoding_reproduces_every_scripted_turn(name: str) -> None:
    from pytest_lfm.micro.verify import verify

    path = built_checkpoint(name)
    assert sum(f.stat().st_size for f in path.iterdir()) <= 15 * 2**20
    misses = [r for r in verify(path, name) if not r.exact]
    assert not misses, "\n".join(f"{r.turn_id} [{r.sglang_rendering}]: {r.expected!r} != {r.got!r}" for r in misses)

"""What a launch serves, from its arguments and its checkpoint's configuration (runtime.served): what the
/v1/models check compares the server's list with."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pytest_lfm.matrix import ModelSpec, load_matrix
from pytest_lfm.runtime import served

DENSE = ModelSpec("my-org/dense", "dense", frozenset({"chat"}), "lfm2")


def test_the_served_name_is_the_served_model_name_else_the_model_path() -> None:
    launch = served.from_args(["python", "-m", "sglang.launch_server", "--model-path", "/m/x", "--port", "1"])
    assert launch is not None and (launch.model_path, launch.name, launch.context_length) == ("/m/x", "/m/x", None)
    named = served.from_args(["--model-path=/m/x", "--served-model-name", "lfm", "--context-length", "1024"])
    assert named is not None and (named.name, named.context_length) == ("lfm", 1024)
    assert served.from_args(["--tool-call-parser", "lfm2"]) is None  # a server started elsewhere: not known


def test_a_server_started_elsewhere_reports_its_arguments() -> None:
    info = {"model_path": "LiquidAI/LFM2-350M", "served_model_name": "lfm", "context_length": None, "version": "x"}
    launch = served.from_server_info(info)
    assert (launch.model_path, launch.name, launch.context_length) == ("LiquidAI/LFM2-350M", "lfm", None)
    assert served.from_server_info({"model_path": "/m", "served_model_name": None}).name == "/m"


@pytest.mark.parametrize(("config", "context"), [
    ({"max_position_embeddings": 4096}, 4096),
    ({"text_config": {"max_position_embeddings": 128000}, "vision_config": {}}, 128000),  # LFM2-VL
    ({"seq_length": 2048, "max_position_embeddings": 4096}, 2048),  # sglang's order of preference
    ({"max_position_embeddings": 4096, "rope_scaling": {"factor": 4.0}}, 16384),
    ({"max_position_embeddings": 4096, "rope_scaling": {"factor": 4.0, "rope_type": "llama3"}}, 4096),
    ({}, 2048),
])
def test_the_configured_context_is_sglangs_derivation(config: dict[str, object], context: int) -> None:
    assert served.context_of_config(config) == context


def test_the_context_comes_from_the_launch_else_the_served_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"max_position_embeddings": 32768}))
    given = served.from_args(["--model-path", str(tmp_path), "--context-length", "512"])
    assert given is not None and served.with_context(given, DENSE).context_length == 512
    launch = served.from_args(["--model-path", str(tmp_path)])
    assert launch is not None
    filled = served.with_context(launch, DENSE)
    assert filled.context_length == 32768 and filled.context_source == str(tmp_path / "config.json")


def test_a_micro_checkpoint_served_elsewhere_has_its_recipes_context() -> None:
    """A replayed recording names a checkpoint directory of the GPU host: the recipe says what its build wrote."""
    matrix = load_matrix()
    for name in ("micro-dense", "micro-vl"):
        model = matrix.get(name)
        assert model is not None
        launch = served.from_args(["--model-path", "/not/on/this/host/dense-0123"])
        assert launch is not None
        filled = served.with_context(launch, model)
        assert filled.context_length == 4096 and filled.name == "/not/on/this/host/dense-0123"


def test_an_unreadable_configuration_falls_back_to_the_matrix_or_is_unknown(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    launch = served.from_args(["--model-path", "my-org/not-in-any-cache-xyz"])
    assert launch is not None
    missing = ModelSpec("my-org/not-in-any-cache-xyz", "dense", frozenset({"chat"}), "lfm2")
    with pytest.raises(served.UnknownContext, match=r"config\.json is not readable here"):
        served.with_context(launch, missing)
    stated = ModelSpec("my-org/not-in-any-cache-xyz", "dense", frozenset({"chat"}), "lfm2", context_length=8192,
                       source="mine.toml")
    assert served.with_context(launch, stated).context_length == 8192

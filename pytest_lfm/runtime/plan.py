"""The launch plan: the runtimes a run's tests need, in the order the tests will ask for them, decided at collection,
and what each one is expected to hold on the GPU."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pytest_lfm.matrix import LaunchConfig, flag_value, launch_reasons, parity_engine_launch

QUIET_FIXTURE = "lfm_quiet"
"""Tests that use this fixture measure time or memory: they run last, alone on their GPUs."""
RUNTIME_OVERHEAD_MIB = 4096
"""What a runtime holds besides its weights and pools: the CUDA context of each process, CUDA graphs, activations
and sampling buffers (a micro checkpoint's server: weights and pools of ~1 GiB, ~3-4 GiB in all)."""


@dataclass
class PlannedLaunch:
    """One runtime the selected tests need, with the tests it serves in the order they run."""

    kind: str
    config: LaunchConfig
    tests: list[str] = field(default_factory=list)
    quiet_tests: int = 0

    @property
    def key(self) -> str:
        return launch_key(self.kind, self.config)


def launch_key(kind: str, config: LaunchConfig) -> str:
    return f"{kind}:{config.id}"


def launch_of(item: pytest.Item) -> LaunchConfig | None:
    callspec = getattr(item, "callspec", None)
    launch = callspec.params.get("lfm_launch") if callspec else None
    return launch if isinstance(launch, LaunchConfig) else None


def own_args(item: pytest.Item) -> set[str]:
    """The fixtures the test function names itself (not those its fixtures pull in)."""
    info = getattr(item, "_fixtureinfo", None)
    return set(getattr(info, "argnames", ()))


def marked_to_skip(item: pytest.Item) -> bool:
    if item.get_closest_marker("skip") is not None:
        return True
    return any(mark.args and all(isinstance(a, bool) and a for a in mark.args)
               for mark in item.iter_markers("skipif"))


def needs(item: pytest.Item) -> list[tuple[str, LaunchConfig]]:
    """The runtimes this test will ask the pool for: its configuration's server and/or engine (that configuration
    without the radix cache: ``matrix.parity_engine_launch``)."""
    launch = launch_of(item)
    if launch is None or marked_to_skip(item):
        return []
    names = set(getattr(item, "fixturenames", ()))
    wanted = []
    if "lfm_server" in names or ("lfm_runtime_pool" in own_args(item) and "lfm_engine" not in names):
        wanted.append(("server", launch))
    if "lfm_engine" in names:
        wanted.append(("engine", parity_engine_launch(launch)))
    return wanted


def is_quiet(item: pytest.Item) -> bool:
    return QUIET_FIXTURE in getattr(item, "fixturenames", ())


def build_plan(items: Iterable[pytest.Item]) -> list[PlannedLaunch]:
    """One launch per distinct (kind, configuration), in the order the (already sorted) tests first need them."""
    plan: dict[str, PlannedLaunch] = {}
    for item in items:
        for kind, config in needs(item):
            entry = plan.setdefault(launch_key(kind, config), PlannedLaunch(kind, config))
            entry.tests.append(item.nodeid)
            entry.quiet_tests += is_quiet(item)
    return list(plan.values())


# ---------------------------------------------------------------- sizing


def _model_dir(config: LaunchConfig) -> Path | None:
    """Where the model's files are on this host without fetching anything: a local path, a built micro checkpoint or
    the Hugging Face cache; None when they are not here."""
    spec = config.model
    if spec.micro is not None:
        from pytest_lfm import micro

        built = micro.checkpoint_dir(spec.micro)
        return built if micro.is_built(built) else None
    path = Path(spec.id)
    if path.is_dir():
        return path
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(spec.id, local_files_only=True))
    except Exception:  # not in the cache, or no huggingface_hub: the size is unknown
        return None


def _text_config(config: LaunchConfig, directory: Path | None) -> dict[str, Any] | None:
    if config.model.micro is not None:
        from pytest_lfm.micro.configs import CONFIGS

        raw = CONFIGS[config.model.micro]
        return dict(raw.get("text", raw))
    if directory is None or not (directory / "config.json").is_file():
        return None
    data: dict[str, Any] = json.loads((directory / "config.json").read_text())
    return dict(data.get("text_config", data))


def kv_bytes_per_token(text: dict[str, Any], dtype_bytes: int = 2) -> int:
    """Bytes of KV cache per token: keys and values of every attention layer (LFM2's conv layers keep none)."""
    layers = text.get("layer_types") or ["full_attention"] * int(text.get("num_hidden_layers", 0))
    attention = sum(1 for kind in layers if kind != "conv")
    heads = int(text.get("num_attention_heads", 1))
    head_dim = int(text.get("head_dim") or int(text.get("hidden_size", 0)) // max(heads, 1))
    return attention * int(text.get("num_key_value_heads", heads)) * head_dim * 2 * dtype_bytes


def conv_state_bytes(text: dict[str, Any], dtype_bytes: int = 2) -> int:
    """Bytes of one request's short-conv state: (kernel - 1) past inputs of every conv layer."""
    layers = text.get("layer_types") or []
    conv = sum(1 for kind in layers if kind == "conv")
    return conv * int(text.get("hidden_size", 0)) * max(int(text.get("conv_L_cache", 3)) - 1, 1) * dtype_bytes


def estimate_mib(config: LaunchConfig) -> int | None:
    """GPU memory the runtime will hold: weights + KV pool (--max-total-tokens) + conv-state pool
    (--max-mamba-cache-size) + RUNTIME_OVERHEAD_MIB. None when its pools are not capped by its arguments (sglang then
    sizes them from the GPU's free memory: it must run alone) or the model's config is not on this host."""
    args = config.server_args()
    tokens = flag_value(args, "--max-total-tokens")
    if tokens is None:
        return None
    directory = _model_dir(config)
    text = _text_config(config, directory)
    if text is None:
        return None
    weights = sum(p.stat().st_size for p in directory.glob("*.safetensors")) if directory else 0
    slots = flag_value(args, "--max-mamba-cache-size")
    states = int(slots) * conv_state_bytes(text) if slots is not None else 0
    total = weights + int(tokens) * kv_bytes_per_token(text) + states
    return (total >> 20) // max(config.tp_size, 1) + RUNTIME_OVERHEAD_MIB


# ---------------------------------------------------------------- showing it


def describe(plan: Sequence[PlannedLaunch], *, where: str, estimates: dict[str, int | None],
             max_starting: int) -> list[str]:
    """The plan as the header prints it: each launch in order with its kind, arguments and the tests it serves."""
    if not plan:
        return [f"pytest-lfm launch plan: no launches ({where})"]
    lines = [f"pytest-lfm launch plan: {len(plan)} launches on {where}; up to {max_starting} start at once in the "
             "background while tests run, and the slow (torch.compile) ones besides; timing and memory checks run "
             "last, alone"]
    width = max(len(p.config.id) for p in plan)
    for index, launch in enumerate(plan, 1):
        estimate = estimates.get(launch.key)
        size = f"~{estimate / 1024:.1f} GiB" if estimate is not None else "runs alone"
        quiet = f", {launch.quiet_tests} alone" if launch.quiet_tests else ""
        lines.append(f"  {index:2d}. {launch.kind:6s} {launch.config.id:{width}s}  {len(launch.tests):4d} tests"
                     f"{quiet}  {size}  {' '.join(launch.config.server_args())}")
        lines += [f"      {reason}" for reason in launch_reasons(launch.config.id)]
    return lines

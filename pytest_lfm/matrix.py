"""The model matrix: which models are qualified, with what capabilities, launch arguments and budgets."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema

from pytest_lfm.matrix_schema import FAMILIES, PROFILES, SCHEMA

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

REASONING_PARSER_FLAG = "--reasoning-parser"
"""A model that reasons names its parser: sglang 0.5.17's template detection leaves LFM2 templates out of its
``<think>`` rule (parser/template_detection.py, ``_is_deepseek_r1_think_tags``), so nothing splits the reasoning
from the answer unless the launch says how."""
SELECTORS = (*FAMILIES, "legacy", "micro", "all")
METRICS_FLAG = "--enable-metrics"
"""Every server launch exposes /metrics, as production servers do: the latency, fidelity and memory checks read the
server's own figures from the server under test. An sgl.Engine gets no metrics: in-process, it would set
PROMETHEUS_MULTIPROC_DIR for this process and every server started after it."""
# float16 needs the short-conv state in float16 too (docs/facts.md, float16; sglang #19773, #30178, #31719)
DTYPE_ENV: dict[str, dict[str, str]] = {"float16": {"SGLANG_MAMBA_CONV_DTYPE": "float16"}}

STREAM_INTERVAL = 8
"""Tokens per streamed chunk on the float16 variant (sglang --stream-interval N sends a request's output after its
first token and then every N tokens: scheduler_components/output_streamer.py, ``len(output_ids) % N == 1``). A micro
checkpoint's two-block answer is 24 tokens and <|im_end|>, 12 per block: with 8 it comes in 4 chunks (tokens 1,
2-9, 10-17, 18-25), the third holding the end of the first block and the start of the second, so the parser gets a
block's end and the next block's start in one delta."""
FORWARD_UNKNOWN_TOOLS_ENV = "SGLANG_FORWARD_UNKNOWN_TOOLS"
FLOAT16_VARIANT: dict[str, Any] = {
    "dtype": "float16", "extra_args": ("--stream-interval", str(STREAM_INTERVAL)),
    "env": {FORWARD_UNKNOWN_TOOLS_ENV: "1"}}
"""The float16 launch (``@pytest.mark.lfm_launch(**FLOAT16_VARIANT)``): the dtype suite's, which also streams in
chunks and forwards calls to unknown tools, so that those checks need no launch of their own (LAUNCH_REASONS)."""
DISABLE_RADIX_CACHE = "--disable-radix-cache"
DETERMINISTIC_INFERENCE = "--enable-deterministic-inference"
DETERMINISTIC_VARIANT: dict[str, Any] = {"extra_args": (DETERMINISTIC_INFERENCE,)}
"""The launch on which a request's seed decides its sampling (``@pytest.mark.lfm_launch(**DETERMINISTIC_VARIANT)``):
sglang 0.5.17 ignores seeds without it (sampling/sampling_batch_info.py:118-133)."""
LAUNCH_REASONS: dict[str, str] = {
    "--stream-interval": ("streams several tokens per chunk: call blocks split across and joined in deltas "
                          "(conformance/test_tool_text.py; sglang #40291)"),
    f"{FORWARD_UNKNOWN_TOOLS_ENV}=1": ("forwards a call to a tool the request lacks "
                                       "(conformance/test_unknown_tools.py; function_call/lfm2_detector.py)"),
    DETERMINISTIC_INFERENCE: ("samples by each request's seed: the same seed, the same text "
                              "(conformance/test_sampling.py; sampling/sampling_batch_info.py:118-133)"),
    DISABLE_RADIX_CACHE: ("the engine is the prefix cache's reference: greedy outputs without one "
                          "(conformance/test_prefix_cache.py; sglang #36951, #33450)"),
}
"""Why a launch carries an argument or environment variable that the model's own launch lacks, keyed by what its
configuration id then holds: the launch plan and the report show it."""
class MatrixError(ValueError):
    """A matrix file that does not follow the schema; the message names file, entry and field."""


@dataclass(frozen=True)
class ModelSpec:
    """One model of the matrix."""

    id: str
    family: str
    capabilities: frozenset[str]
    chat_template: str
    launch_args: tuple[str, ...] = ()
    min_sglang: str = "0.5.10"
    successor: str | None = None
    """The id of the model that supersedes this one (Liquid's deprecations); None for the current lineup."""
    dtypes: tuple[str, ...] = ("bfloat16", "float16")
    latency_budgets: Mapping[str, Mapping[str, Any] | Sequence[Mapping[str, Any]]] = field(
        default_factory=dict, compare=False, hash=False)
    micro: str | None = None
    context_length: int | None = None
    sampling: Mapping[str, float] = field(default_factory=dict, compare=False, hash=False)
    """The recommended sampling parameters (temperature, top_k, top_p, min_p, repetition_penalty); {} when the
    matrix gives none."""
    source: str = ""

    @property
    def legacy(self) -> bool:
        """Superseded by a newer model (``successor``): selected by ``legacy`` and ``all``, not by its family."""
        return self.successor is not None

    @property
    def reasoning_parser(self) -> str | None:
        """The ``--reasoning-parser`` the model launches with, if any."""
        return flag_value(self.launch_args, REASONING_PARSER_FLAG)

    def model_path(self) -> str:
        """What sglang loads: the hub id, or for a micro checkpoint its built (cached) directory."""
        if self.micro is None:
            return self.id
        from pytest_lfm import micro

        return str(micro.build(self.micro))

    def tokenizer_path(self) -> str:
        """Where the tokenizer, chat template and processor live: the model itself, or for a micro checkpoint its
        tokenizer files (no training needed, so replayed and CPU runs can count prompt tokens)."""
        if self.micro is None:
            return self.id
        from pytest_lfm import micro

        return str(micro.tokenizer_dir(self.micro))

    def budget_for(self, gpu_name: str, profile: str = "default", concurrency: int = 1) -> Mapping[str, Any] | None:
        """The latency budget whose GPU-name key prefixes ``gpu_name`` for ``profile`` at ``concurrency``, if any."""
        for prefix, budgets in self.latency_budgets.items():
            if not gpu_name.startswith(prefix):
                continue
            for budget in _budget_list(budgets):
                if budget_key(budget) == (profile, concurrency):
                    return budget
        return None


def _budget_list(budgets: Mapping[str, Any] | Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [budgets] if isinstance(budgets, Mapping) else list(budgets)


def budget_key(budget: Mapping[str, Any]) -> tuple[str, int]:
    """What a latency budget applies to: (launch profile, concurrency)."""
    return str(budget.get("profile", "default")), int(budget.get("concurrency", 1))


def flag_value(args: Sequence[str], *flags: str) -> str | None:
    for i, arg in enumerate(args):
        for flag in flags:
            if arg == flag and i + 1 < len(args):
                return args[i + 1]
            if arg.startswith(flag + "="):
                return arg.split("=", 1)[1]
    return None


@dataclass(frozen=True)
class LaunchConfig:
    """One runtime configuration: model x dtype x profile x extra arguments and environment."""

    model: ModelSpec
    dtype: str = "bfloat16"
    profile: str = "default"
    extra_args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()

    @property
    def id(self) -> str:
        parts = [self.model.id]
        if self.dtype != "bfloat16":
            parts.append(self.dtype)
        if self.profile != "default":
            parts.append(self.profile)
        if self.extra_args:
            parts.append(" ".join(self.extra_args))
        if self.env:
            parts.append(",".join(f"{k}={v}" for k, v in self.env))
        return "-".join(parts)

    def server_args(self) -> list[str]:
        """sglang arguments besides --model-path/--host/--port."""
        args = [*self.model.launch_args, *PROFILES[self.profile], *self.extra_args]
        if self.dtype != "bfloat16" and flag_value(args, "--dtype") is None:
            args += ["--dtype", self.dtype]
        if METRICS_FLAG not in args:
            args.append(METRICS_FLAG)
        return args

    @property
    def tp_size(self) -> int:
        value = flag_value(self.server_args(), "--tp-size", "--tp", "--tensor-parallel-size")
        return int(value) if value else 1

    def environment(self) -> dict[str, str]:
        """The runtime's extra environment: what its dtype needs (DTYPE_ENV), then ``env``, which wins."""
        return {**DTYPE_ENV.get(self.dtype, {}), **dict(self.env)}

    def engine_kwargs(self) -> dict[str, Any]:
        """The launch arguments as sgl.Engine keyword arguments (ServerArgs field names)."""
        kwargs: dict[str, Any] = {}
        args = [arg for arg in self.server_args() if arg != METRICS_FLAG]
        i = 0
        while i < len(args):
            key = args[i].lstrip("-").replace("-", "_")
            if i + 1 < len(args) and not args[i + 1].startswith("--"):
                value: Any = args[i + 1]
                for cast in (int, float):
                    try:
                        value = cast(value)
                        break
                    except ValueError:
                        continue
                kwargs[key] = value
                i += 2
            else:
                kwargs[key] = True
                i += 1
        return kwargs


def launch_reasons(config_id: str) -> list[str]:
    """``LAUNCH_REASONS`` of what the configuration id holds, as "what: why"."""
    return [f"{key}: {why}" for key, why in LAUNCH_REASONS.items() if key in config_id]


def parity_engine_launch(config: LaunchConfig) -> LaunchConfig:
    """The sgl.Engine of a configuration: its launch without the radix cache, so that the engine's greedy outputs are
    what the server's prefix cache must reproduce. Its other checks (same outputs as the server, batch as one by one,
    shutdown) hold with and without the cache."""
    if DISABLE_RADIX_CACHE in config.extra_args:
        return config
    return replace(config, extra_args=(*config.extra_args, DISABLE_RADIX_CACHE))


@dataclass(frozen=True)
class Override:
    """A matrix entry that a later one with the same id replaced: the id, the replaced entry's file, the new one's."""

    id: str
    replaced: str
    by: str


@dataclass(frozen=True)
class Matrix:
    """All known models, in file order; a later entry replaces an earlier one with the same id (see ``overrides``)."""

    models: tuple[ModelSpec, ...]
    overrides: tuple[Override, ...] = ()

    def ids(self) -> list[str]:
        return [m.id for m in self.models]

    def get(self, model_id: str) -> ModelSpec | None:
        return next((m for m in self.models if m.id == model_id), None)

    def select(self, selectors: Iterable[str]) -> list[ModelSpec]:
        """Resolve ids, short names, families (dense, moe, vl: the current real models), 'legacy' (superseded ones),
        'micro' and 'all' (every model: current, legacy and micro); unknown -> KeyError."""
        chosen: list[ModelSpec] = []
        for sel in selectors:
            if sel == "all":
                hits = list(self.models)
            elif sel == "micro":
                hits = [m for m in self.models if m.micro]
            elif sel == "legacy":
                hits = [m for m in self.models if m.legacy]
            elif sel in FAMILIES:
                hits = [m for m in self.models if m.family == sel and not m.micro and not m.legacy]
            else:
                short = self._by_short_name(sel)
                model = self.get(sel) or self.get(f"micro-{sel}") or (short[0] if len(short) == 1 else None)
                if model is None:
                    raise KeyError(sel)
                hits = [model]
            chosen += [m for m in hits if m not in chosen]
        return chosen

    def _by_short_name(self, name: str) -> list[ModelSpec]:
        return [m for m in self.models if m.id.split("/")[-1] == name]

    def selection_error(self, selector: str, source: str) -> str:
        """Why ``selector`` (from ``source``) selects no model, and the fix: the message for select()'s KeyError."""
        same = [m.id for m in self._by_short_name(selector)]
        if len(same) > 1:
            return (f"model {selector!r} (from {source}) is ambiguous: it is the short name of {', '.join(same)}. "
                    "Pass the full id of the one to qualify.")
        return (f"unknown model {selector!r} (from {source}). Known ids: {', '.join(self.ids())}; selectors: "
                f"{', '.join(SELECTORS)}. To add a model, write a [[model]] entry (see "
                "matrices/models.toml) in a TOML file and pass --lfm-matrix FILE.")

    def describe_legacy(self, selected: Iterable[ModelSpec]) -> list[str]:
        """Report-header lines, one per selected model that a newer one supersedes."""
        return [f"pytest-lfm matrix: {m.id} is legacy, superseded by {m.successor}" for m in selected if m.legacy]

    def describe_overrides(self) -> list[str]:
        """Report-header lines, one per entry a later one with the same id replaced; [] when no id repeats."""
        return [f"pytest-lfm matrix: {o.id} from {o.by} replaces the one from {o.replaced}" for o in self.overrides]


def builtin_matrix_files() -> list[Path]:
    """The TOML files shipped in matrices/ (micro checkpoints first): a checkout's own, beside this package (run
    from it with PYTHONPATH=.), else the installed package's."""
    root: Any = Path(__file__).resolve().parent.parent / "matrices"
    if not (root / "models.toml").is_file():
        root = resources.files("pytest_lfm.matrices")
    files = sorted((Path(str(p)) for p in root.iterdir() if p.name.endswith(".toml")),
                   key=lambda p: (p.name != "micro.toml", p.name))
    return files


def _entry_error(path: Path, index: int, entry: Any, err: jsonschema.ValidationError) -> MatrixError:
    name = entry.get("id", f"#{index + 1}") if isinstance(entry, dict) else f"#{index + 1}"
    where = ".".join(str(p) for p in list(err.absolute_path)[2:]) or "(entry)"
    return MatrixError(f"{path}: model {name!r}, field {where}: {err.message}")


def load_file(path: Path) -> list[ModelSpec]:
    """Parse and validate one matrix file."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise MatrixError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); a TOML file is UTF-8: save "
                          "it in that encoding") from None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise MatrixError(f"{path}: not a readable TOML file: {exc}") from None
    errors = sorted(jsonschema.Draft202012Validator(SCHEMA).iter_errors(data), key=lambda e: list(e.path))
    if errors:
        err = errors[0]
        if len(err.absolute_path) >= 2 and err.absolute_path[0] == "model":
            index = int(err.absolute_path[1])
            raise _entry_error(path, index, data["model"][index], err)
        raise MatrixError(f"{path}: {err.message} (a matrix file holds [[model]] tables)")
    for entry in data["model"]:
        for gpu, budgets in entry.get("latency_budgets", {}).items():
            keys = [budget_key(b) for b in _budget_list(budgets)]
            twice = sorted({k for k in keys if keys.count(k) > 1})
            if twice:
                raise MatrixError(f"{path}: model {entry['id']!r}, field latency_budgets.{gpu}: two budgets for "
                                  f"profile {twice[0][0]!r} at concurrency {twice[0][1]} (give each once)")
        if "reasoning" in entry["capabilities"] and flag_value(entry.get("launch_args", []),
                                                               REASONING_PARSER_FLAG) is None:
            raise MatrixError(f"{path}: model {entry['id']!r}, field launch_args: capability 'reasoning' needs "
                              f"{REASONING_PARSER_FLAG} NAME there (sglang does not detect LFM2's <think> format)")
        if entry.get("successor") == entry["id"]:
            raise MatrixError(f"{path}: model {entry['id']!r}, field successor: names the model itself (name the "
                              "model that supersedes it, or leave the field out)")
    return [
        ModelSpec(
            id=e["id"],
            family=e["family"],
            capabilities=frozenset(e["capabilities"]),
            chat_template=e["chat_template"],
            launch_args=tuple(e.get("launch_args", ())),
            min_sglang=e.get("min_sglang", "0.5.10"),
            successor=e.get("successor"),
            dtypes=tuple(e.get("dtypes", ("bfloat16", "float16"))),
            latency_budgets=e.get("latency_budgets", {}),
            micro=e.get("micro"),
            context_length=e.get("context_length"),
            sampling=dict(e.get("sampling", {})),
            source=str(path),
        )
        for e in data["model"]
    ]


def load_matrix(extra: Sequence[Path] = ()) -> Matrix:
    """The built-in matrix plus ``extra`` files; an entry with a known id replaces the earlier one, in its place."""
    by_id: dict[str, ModelSpec] = {}
    overrides: list[Override] = []
    for path in [*builtin_matrix_files(), *extra]:
        for spec in load_file(path):
            if spec.id in by_id:
                overrides.append(Override(spec.id, by_id[spec.id].source, spec.source))
            by_id[spec.id] = spec
    for spec in by_id.values():
        if spec.successor is not None and spec.successor not in by_id:
            raise MatrixError(f"{spec.source}: model {spec.id!r}, field successor: {spec.successor!r} is not a model "
                              "of the matrix (give its full id, and a [[model]] entry for it)")
    return Matrix(tuple(by_id.values()), tuple(overrides))

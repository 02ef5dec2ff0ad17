"""What differs between sglang versions, in one place: how a server is launched, the spellings of Engine
arguments, and version comparison (packaging's)."""

from __future__ import annotations

import argparse
import difflib
import importlib.util
import inspect
from collections.abc import Collection, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from packaging.version import InvalidVersion, Version

SERVE = "from sglang.cli.main import main; main()"
LAUNCHERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    # `sglang serve`, the recommended entrypoint since 0.5.5; sglang.cli.main has no __main__ guard, hence -c
    ("0.5.5", ("-c", SERVE, "serve")),
    ("0", ("-m", "sglang.launch_server")),
)
"""(first sglang version, interpreter arguments that launch its server), newest first."""

def installed_sglang_version() -> str | None:
    """The installed sglang's version (from its metadata, without importing it), or None."""
    try:
        return metadata.version("sglang")
    except metadata.PackageNotFoundError:
        return None


def launcher_args(sglang_version: str | None) -> tuple[str, ...]:
    """The interpreter arguments that launch sglang ``sglang_version``'s server (the installed one's when None)."""
    if sglang_version is None:
        spec = importlib.util.find_spec("sglang")
        if spec is not None and spec.origin is not None:
            has_cli = (Path(spec.origin).parent / "cli" / "main.py").exists()
            return LAUNCHERS[0][1] if has_cli else LAUNCHERS[-1][1]
        sglang_version = "0"
    try:
        version = Version(sglang_version)
    except InvalidVersion:
        return LAUNCHERS[0][1]
    return next(args for first, args in LAUNCHERS if version >= Version(first))


def at_least(version: str, minimum: str) -> bool:
    """Whether sglang ``version`` is ``minimum`` or newer; a version packaging cannot read (a local build) counts as
    new enough."""
    try:
        return Version(version) >= Version(minimum)
    except InvalidVersion:
        return True


RENAMES: tuple[tuple[str, str], ...] = (
    ("cuda_graph_max_bs", "cuda_graph_max_bs_decode"),  # 0.5.17 has only the second (docs/facts.md)
    ("cuda_graph_bs", "cuda_graph_bs_decode"),
    ("tp", "tp_size"),
    ("dp", "dp_size"),
    ("pp", "pp_size"),
)
"""Pairs of spellings of one setting across sglang versions: a kwarg the installed ServerArgs lacks is renamed to
its partner when the partner is a field."""


def normalize_engine_kwargs(
    kwargs: Mapping[str, Any], fields: Collection[str], flags: Mapping[str, str], version: str = "installed",
) -> dict[str, Any]:
    """``kwargs`` with every key a ServerArgs field of this sglang: known as is, via a CLI flag's destination
    (``flags``: "--cuda-graph-max-bs" -> "cuda_graph_max_bs_decode") or via RENAMES; TypeError names the unknown."""
    renames = {a: b for a, b in RENAMES} | {b: a for a, b in RENAMES}
    result: dict[str, Any] = {}
    for key, value in kwargs.items():
        field = key
        if field not in fields:
            field = flags.get("--" + key.replace("_", "-"), field)
        if field not in fields:
            field = renames.get(key, field)
        if field not in fields:
            close = difflib.get_close_matches(key, list(fields), n=3)
            raise TypeError(f"sglang {version}'s Engine has no argument {key}={value!r}: not a ServerArgs field"
                            f"{' (did you mean ' + ', '.join(close) + '?)' if close else ''}. Engine arguments are "
                            "the ServerArgs fields of the installed sglang (`python -m sglang.launch_server --help`).")
        if field in result and result[field] != value:
            raise TypeError(f"Engine arguments set {field} twice ({key}={value!r} and {result[field]!r})")
        result[field] = value
    return result


def server_args_schema() -> tuple[set[str], dict[str, str]]:
    """The installed sglang's ServerArgs fields and its CLI flags -> field names (imports sglang: slow)."""
    from sglang.srt.server_args import ServerArgs

    parser = argparse.ArgumentParser(add_help=False)
    ServerArgs.add_cli_args(parser)
    flags = {opt: action.dest for action in parser._actions for opt in action.option_strings}
    return set(inspect.signature(ServerArgs).parameters), flags

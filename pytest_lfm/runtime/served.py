"""What a launch serves, read from the launch and the checkpoint rather than from the server it started: the model
name clients send and the context length. A check of what the server reports (``GET /v1/models``) holds it to these.

- the name: ``--served-model-name``, which sglang defaults to ``--model-path`` (ServerArgs);
- the context: ``--context-length``, else what sglang derives from the checkpoint's ``config.json``: the first of
  its context keys in the text config (``text_config`` for LFM2-VL), times the rope-scaling factor, 2048 when it
  names none (sglang's ``get_context_length``; docs/facts.md, "Server behaviour").
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pytest_lfm.matrix import ModelSpec, flag_value

#: sglang's context keys, in its order of preference
CONTEXT_KEYS = ("max_sequence_length", "seq_length", "max_seq_len", "model_max_length", "max_position_embeddings")
DEFAULT_CONTEXT = 2048


class UnknownContext(LookupError):
    """The launch gave no --context-length and the checkpoint's configuration cannot be read here."""


@dataclass(frozen=True)
class ServedLaunch:
    """What one launch serves: its model path, the name it serves it under and its context length, and where each
    came from (for failure messages)."""

    model_path: str
    name: str
    context_length: int | None  # None until known: the launch gave no --context-length
    source: str
    context_source: str = ""


def from_args(args: Sequence[str]) -> ServedLaunch | None:
    """The launch as its command line says (a server launched here, or the recorded one); None when it names no
    ``--model-path`` (a server started elsewhere: its command line is not known)."""
    path = flag_value(args, "--model-path", "--model")
    if path is None:
        return None
    context = flag_value(args, "--context-length")
    return ServedLaunch(path, flag_value(args, "--served-model-name") or path, int(context) if context else None,
                        "the launch's arguments", "--context-length" if context else "")


def from_server_info(info: Mapping[str, Any]) -> ServedLaunch:
    """The launch as a server started elsewhere reports its arguments (``GET /get_server_info``: its ServerArgs)."""
    path = str(info["model_path"])
    context = info.get("context_length")
    return ServedLaunch(path, str(info.get("served_model_name") or path), int(context) if context else None,
                        "the server's arguments (GET /get_server_info)", "context_length" if context else "")


def context_of_config(config: Mapping[str, Any]) -> int:
    """The context length sglang derives from a checkpoint's ``config.json``."""
    text = config.get("text_config") or config
    scaling = text.get("rope_scaling") or {}
    factor = scaling.get("factor", 1) if isinstance(scaling, Mapping) else 1
    if isinstance(scaling, Mapping) and ("original_max_position_embeddings" in scaling
                                         or scaling.get("rope_type") == "llama3"):
        factor = 1
    for key in CONTEXT_KEYS:
        if text.get(key) is not None:
            return int(factor * text[key])
    return DEFAULT_CONTEXT


def checkpoint_config(model_path: str, model: ModelSpec) -> tuple[dict[str, Any], str]:
    """The served checkpoint's configuration and where it was read: its ``config.json`` where the served directory
    is on this host; for a micro checkpoint served elsewhere (a replayed recording) its recipe's model config,
    which its build writes there (a recording names its checkpoint by the recipe's key, and one of another recipe
    is refused); else the model's ``config.json`` from the hub (its cache, or a download)."""
    local = Path(model_path) / "config.json"
    if local.is_file():
        return json.loads(local.read_text(encoding="utf-8")), str(local)
    if model.micro is not None:
        from pytest_lfm import micro

        built = micro.checkpoint_dir(model.micro) / "config.json"
        if built.is_file():
            return json.loads(built.read_text(encoding="utf-8")), str(built)
        config = dict(micro.recipe(model.micro)["config"])
        if "text" in config:  # the VL recipe: its text model becomes the checkpoint's text_config
            config = {"text_config": config["text"]}
        return config, f"micro checkpoint {model.micro}'s recipe (its config.json is not on this host)"
    try:
        from huggingface_hub import hf_hub_download

        path = hf_hub_download(model.id, "config.json")
    except Exception as exc:  # offline, not on the hub, no cache: the caller decides
        raise UnknownContext(f"{model.id}'s config.json is not readable here ({type(exc).__name__}: {exc})") from exc
    return json.loads(Path(path).read_text(encoding="utf-8")), f"{model.id}/config.json"


def with_context(launch: ServedLaunch, model: ModelSpec) -> ServedLaunch:
    """``launch`` with its context length: its own, else the checkpoint's configured one, else the matrix's
    ``context_length`` where the configuration cannot be read here; UnknownContext when none is known."""
    if launch.context_length is not None:
        return launch
    try:
        config, where = checkpoint_config(launch.model_path, model)
    except UnknownContext:
        if model.context_length is None:
            raise
        return replace(launch, context_length=model.context_length,
                       context_source=f"the matrix's context_length ({model.source})")
    return replace(launch, context_length=context_of_config(config), context_source=where)

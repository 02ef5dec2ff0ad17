"""Micro checkpoints: tiny LFM2 dense, MoE and VL models trained to answer the scripted prompts like LFM2.

``build(name)`` returns the checkpoint directory, building it on first use and caching it under
``$LFM_MICRO_CACHE`` (default ``~/.cache/pytest-lfm/micro``) in a folder keyed by a hash of the recipe
(:func:`recipe`: model config, training parameters, chat template, the rendered training set and the training code).
Training is deterministic and runs on the GPU when torch sees one, else on the CPU.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import inspect
import json
import os
import shutil
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

from pytest_lfm.micro import configs
from pytest_lfm.micro.configs import NAMES as NAMES

INFO_FILE = "micro.json"
# the code that turns the training set into a checkpoint; the rest of micro/ (script, rendering, cache, verify) reaches
# the weights only through the rendered training set, which the key hashes itself
_TRAINING_CODE = ("train.py", "tokenizer.py", "builder.py")


def cache_root(cache_dir: Path | str | None = None) -> Path:
    """Where built checkpoints live: ``cache_dir``, else ``$LFM_MICRO_CACHE``, else ``~/.cache/pytest-lfm/micro``."""
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("LFM_MICRO_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "pytest-lfm" / "micro"


def recipe(name: str) -> dict[str, Any]:
    """Everything that determines checkpoint ``name``'s weights; its hash is the cache key: the model config, the
    training parameters, the chat template, a digest of the rendered training set (prompts, completions, which
    examples are scripted, the images' specs) and one of the training code's bytes (``_TRAINING_CODE`` and the
    drawing of the scripted images). A refactor that changes none of them keeps the key and every recording."""
    from pytest_lfm.micro import render

    if name not in NAMES:
        raise ValueError(f"unknown micro checkpoint {name!r}; expected one of {', '.join(NAMES)}")
    return {
        "name": name,
        "config": configs.CONFIGS[name],
        "training": configs.TRAINING,
        "template": render.chat_template(configs.TEMPLATE[name]),
        "training_set": _training_set_digest(name, json.dumps(configs.TRAINING, sort_keys=True),
                                             configs.TEMPLATE[name]),
        "code": _training_code_digest(),
    }


@functools.cache
def _training_set_digest(name: str, training: str, template: str) -> str:
    """sha256 of checkpoint ``name``'s rendered training set (cached per training parameters and template)."""
    from pytest_lfm.micro import corpus
    from pytest_lfm.micro.script import load_script

    rows = [[ex.kind, ex.prompt, ex.completion, ex.scripted, [dataclasses.asdict(img) for img in ex.images]]
            for ex in corpus.examples(load_script(), name, json.loads(training))]
    return hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()


@functools.cache
def _training_code_digest() -> str:
    from pytest_lfm.micro.script import ImageSpec

    here = resources.files("pytest_lfm.micro")
    code = hashlib.sha256()
    for fname in _TRAINING_CODE:
        code.update((here / fname).read_bytes())
    code.update(inspect.getsource(ImageSpec).encode())
    return code.hexdigest()


def recipe_key(recipe_: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(recipe_, sort_keys=True).encode()).hexdigest()[:16]


def checkpoint_dir(name: str, cache_dir: Path | str | None = None) -> Path:
    """The directory ``build(name)`` uses (built or not)."""
    return cache_root(cache_dir) / f"{name}-{recipe_key(recipe(name))}"


def is_built(path: Path) -> bool:
    return (path / INFO_FILE).is_file()


def build(
    name: str,
    *,
    device: str | None = None,
    cache_dir: Path | str | None = None,
    force: bool = False,
    log: Callable[[str], None] | None = None,
) -> Path:
    """The directory of micro checkpoint ``name`` ("dense" | "moe" | "vl"), built now unless already cached.

    Safe to call from several processes at once (a file lock serializes builds of one recipe).
    """
    from filelock import FileLock

    target = checkpoint_dir(name, cache_dir)
    if is_built(target) and not force:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if is_built(target) and not force:
            return target
        from pytest_lfm.micro.builder import build_into

        tmp = target.with_name(target.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        start = time.monotonic()
        stats = build_into(name, tmp, device=device, log=log or (lambda s: None))
        stats["build_seconds"] = round(time.monotonic() - start, 1)
        info = {"recipe_key": target.name.rsplit("-", 1)[1], "name": name, **stats}
        (tmp / INFO_FILE).write_text(json.dumps(info, indent=2) + "\n")
        shutil.rmtree(target, ignore_errors=True)
        tmp.rename(target)
    return target


def tokenizer_dir(name: str, *, cache_dir: Path | str | None = None) -> Path:
    """A directory with checkpoint ``name``'s tokenizer, chat template and processor: the built checkpoint when it
    exists, else just those files (seconds, no training) -- enough to count prompt tokens without a GPU."""
    from filelock import FileLock

    built = checkpoint_dir(name, cache_dir)
    if is_built(built):
        return built
    target = built.with_name(built.name + ".tokenizer")
    if (target / "tokenizer.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if not (target / "tokenizer.json").is_file():
            from pytest_lfm.micro.builder import build_tokenizer_into

            tmp = target.with_name(target.name + ".partial")
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            build_tokenizer_into(name, tmp)
            tmp.rename(target)
    return target


def info(path: Path) -> dict[str, Any]:
    """The build record (steps, margin, seconds, device) of a built checkpoint."""
    data: dict[str, Any] = json.loads((path / INFO_FILE).read_text())
    return data
